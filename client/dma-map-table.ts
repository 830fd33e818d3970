/**
 * DmaMapTable: the client's table of the guest memory it mapped for the
 * server with DMA_MAP, and the bytes behind each range, so it can answer the
 * server's DMA_READ/DMA_WRITE (for fd-less maps, and for fd-backed ones too,
 * as QEMU does). Not to be confused with the server's DmaSpace (server/dma),
 * the server's view of the same maps.
 */
import { VfioUserCommand, DmaMapFlag, Errno } from '../protocol/constants.js';
import { VfioUserClientError } from './errors.js';

/** One DMA_MAP the client made. */
export interface DmaMapEntry {
  readonly addr: bigint;
  readonly size: bigint;
  /** The bytes the device sees at [addr, addr+size). */
  readonly bytes: Uint8Array;
  /** DmaMapFlag bits sent with the map. */
  readonly flags: number;
  /** Whether an fd went with the map (the server may access the memory directly). */
  readonly shared: boolean;
}

/** A sorted set of non-overlapping ranges. */
export class DmaMapTable {
  private ranges: DmaMapEntry[] = [];

  get all(): readonly DmaMapEntry[] {
    return this.ranges;
  }

  add(range: DmaMapEntry): void {
    const end = range.addr + range.size;
    if (this.ranges.some((r) => range.addr < r.addr + r.size && r.addr < end)) {
      throw new VfioUserClientError(
        Errno.EEXIST,
        VfioUserCommand.DMA_MAP,
        `DMA range 0x${range.addr.toString(16)} overlaps a mapped one`,
      );
    }
    this.ranges.push(range);
    this.ranges.sort((a, b) => (a.addr < b.addr ? -1 : 1));
  }

  /** Remove the exact range; returns it (undefined if absent). */
  remove(addr: bigint, size: bigint): DmaMapEntry | undefined {
    const i = this.ranges.findIndex((r) => r.addr === addr && r.size === size);
    return i < 0 ? undefined : this.ranges.splice(i, 1)[0];
  }

  clear(): DmaMapEntry[] {
    return this.ranges.splice(0);
  }

  private find(addr: bigint, length: bigint, command: number): { range: DmaMapEntry; offset: number } {
    const end = addr + length;
    for (const r of this.ranges) {
      if (addr >= r.addr && end <= r.addr + r.size) return { range: r, offset: Number(addr - r.addr) };
    }
    throw new VfioUserClientError(Errno.EFAULT, command, `no DMA map covers 0x${addr.toString(16)}+${length}`);
  }

  /** The bytes at [addr, addr+length) (a copy). EFAULT when not inside one mapped range. */
  read(addr: bigint, length: number): Uint8Array {
    const { range, offset } = this.find(addr, BigInt(length), VfioUserCommand.DMA_READ);
    return range.bytes.slice(offset, offset + length);
  }

  /** Store `data` at addr. EFAULT when unmapped, EPERM when the map is read-only. */
  write(addr: bigint, data: Uint8Array): void {
    const { range, offset } = this.find(addr, BigInt(data.byteLength), VfioUserCommand.DMA_WRITE);
    if ((range.flags & DmaMapFlag.WRITE) === 0)
      throw new VfioUserClientError(Errno.EPERM, VfioUserCommand.DMA_WRITE, 'DMA map is read-only');
    range.bytes.set(data, offset);
  }
}
