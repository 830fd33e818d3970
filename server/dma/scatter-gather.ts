/**
 * Scatter-gather lists over guest memory: a device (NVMe PRPs, virtqueue
 * descriptors) describes one buffer as several guest-physical ranges and
 * reads or writes it as one byte array, the role of libvfio-user's
 * vfu_sgl_read / vfu_sgl_write. To work on the ranges in place instead
 * (zero-copy file I/O), pin them: `dev.dma.pin(sg.entries)` (vfu_sgl_get /
 * vfu_sgl_put).
 *
 * ```ts
 * const sg = new ScatterGather([{ addr: 0x10000n, length: 512 }, { addr: 0x20000n, length: 3584 }]);
 * const bytes = await sg.read(dev.dma);      // gather 4096 bytes
 * await sg.write(dev.dma, reply);            // scatter (reply.length <= sg.length)
 * ```
 */

/** One contiguous run of guest-physical (IO virtual) bytes: [addr, addr + length). */
export interface DmaRange {
  addr: bigint;
  length: number;
}

/** What a scatter-gather list needs from guest memory (DmaSpace provides it). */
export interface GuestMemoryAccess {
  read(addr: bigint, length: number): Uint8Array | Promise<Uint8Array>;
  write(addr: bigint, data: Uint8Array): void | Promise<void>;
}

export class ScatterGather {
  /** The non-empty ranges, in order (copies of what the constructor got). */
  readonly entries: readonly DmaRange[];
  /** Total bytes. */
  readonly length: number;

  /** RangeError for a negative or unsafe length, or a range outside the 64-bit address space. */
  constructor(entries: readonly DmaRange[]) {
    let total = 0;
    for (const e of entries) {
      if (!Number.isSafeInteger(e.length) || e.length < 0)
        throw new RangeError(`scatter-gather: bad segment length ${e.length}`);
      if (e.addr < 0n || e.addr + BigInt(e.length) > 1n << 64n)
        throw new RangeError('scatter-gather: segment outside the 64-bit address space');
      total += e.length;
    }
    this.entries = entries.filter((e) => e.length > 0).map((e) => ({ addr: e.addr, length: e.length }));
    this.length = total;
  }

  /** The sub-list covering bytes [offset, offset + length). */
  slice(offset: number, length = this.length - offset): ScatterGather {
    if (offset < 0 || length < 0 || offset + length > this.length)
      throw new RangeError('scatter-gather: slice out of range');
    const out: DmaRange[] = [];
    let skip = offset;
    let want = length;
    for (const e of this.entries) {
      if (want === 0) break;
      if (skip >= e.length) {
        skip -= e.length;
        continue;
      }
      const take = Math.min(e.length - skip, want);
      out.push({ addr: e.addr + BigInt(skip), length: take });
      want -= take;
      skip = 0;
    }
    return new ScatterGather(out);
  }

  /** Gather every range into one array (ranges read in order). Rejects like `memory.read` (DmaError EFAULT/EPERM from a DmaSpace). */
  async read(memory: GuestMemoryAccess): Promise<Uint8Array> {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const e of this.entries) {
      out.set(await memory.read(e.addr, e.length), at);
      at += e.length;
    }
    return out;
  }

  /** Scatter `data` over the ranges from the start (data may be shorter than the list; RangeError when longer). */
  async write(memory: GuestMemoryAccess, data: Uint8Array): Promise<void> {
    if (data.length > this.length)
      throw new RangeError(`scatter-gather: ${data.length} bytes do not fit ${this.length}`);
    let at = 0;
    for (const e of this.entries) {
      if (at >= data.length) break;
      const n = Math.min(e.length, data.length - at);
      await memory.write(e.addr, data.subarray(at, at + n));
      at += n;
    }
  }
}
