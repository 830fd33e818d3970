/**
 * One BAR at run time: routes REGION_READ/WRITE bytes to the memory-backed
 * areas (a memfd the client also maps), the MSI-X table/PBA, or the author's
 * register handlers, splitting accesses into naturally aligned 1/2/4-byte
 * pieces (8 with read64/write64), low address first.
 */
import type { Logger } from 'pino';
import { native, type NativeMapping } from '../../native/index.js';
import type { RegionDescription } from '../endpoint.js';
import { Errno, RegionFlag } from '../../protocol/constants.js';
import { VfioUserError } from '../../protocol/errors.js';
import type { LogLimiter } from '../log-limiter.js';
import type { BarLayout } from './bar-layout.js';
import type { MsixTable } from './msix-table.js';
import type { AccessSize } from './types.js';

type Zone = 'memory' | 'msix' | 'regs';

interface Piece {
  zone: Zone;
  /** Offset in the BAR. */
  offset: number;
  size: number;
}

export class BarRegion {
  /** The memfd behind the memory areas (owned; closed by close(); exchanged by a device reload). */
  private fd: number | undefined;
  private mapping: NativeMapping | undefined;
  private bytes: Uint8Array | undefined;

  constructor(
    readonly layout: BarLayout,
    private readonly msix: MsixTable | undefined,
    private readonly log: Logger,
    deviceName: string,
    /** Where a throwing register handler is reported (the guest decides how often). */
    private readonly limiter: LogLimiter,
  ) {
    if (layout.memory.length > 0) {
      if (layout.size > native.WINDOW_SIZE)
        throw new Error(`PciDevice: memory-backed BAR ${layout.index} larger than ${native.WINDOW_SIZE} bytes`);
      this.fd = native.memfdCreate(`${deviceName}-bar${layout.index}`, layout.size);
      try {
        this.mapping = native.mmapFd(this.fd, 0, layout.size, native.PROT_READ | native.PROT_WRITE);
      } catch (err) {
        native.closeFd(this.fd);
        throw err;
      }
      this.bytes = new Uint8Array(this.mapping.buffers[0]!);
    }
  }

  /**
   * The whole BAR's shared bytes (only the memory areas are visible to the
   * client), if memory-backed. After a device reload these are the previous
   * generation's (the memfd the client mapped): read it when used, do not keep it.
   */
  get memory(): Uint8Array | undefined {
    return this.bytes;
  }

  /** Whether `other` can take this BAR's backing and give its own: the same size and memory areas. */
  sameBacking(other: BarRegion): boolean {
    const areas = (b: BarRegion): string => JSON.stringify(b.layout.memory);
    return this.layout.size === other.layout.size && areas(this) === areas(other);
  }

  /**
   * Swap the memfd and its mapping with `other` (sameBacking): a device reload
   * gives the new generation the memory the client mmapped, so its mappings
   * stay valid, and the old generation closes the new one's unused memfd.
   */
  exchangeBacking(other: BarRegion): void {
    if (!this.sameBacking(other)) throw new Error(`BAR ${this.index}: another size or memory layout`);
    [this.fd, other.fd] = [other.fd, this.fd];
    [this.mapping, other.mapping] = [other.mapping, this.mapping];
    [this.bytes, other.bytes] = [other.bytes, this.bytes];
  }

  get index(): number {
    return this.layout.index;
  }

  info(): RegionDescription {
    const flags = RegionFlag.READ | RegionFlag.WRITE;
    if (this.fd === undefined) return { flags, size: BigInt(this.layout.size), offset: 0n };
    return {
      flags: flags | RegionFlag.MMAP,
      size: BigInt(this.layout.size),
      offset: 0n,
      fd: this.fd,
      sparseAreas: this.layout.memory.map((a) => ({ offset: BigInt(a.offset), size: BigInt(a.size) })),
    };
  }

  /** Release the memfd and its mapping. Idempotent. */
  close(): void {
    if (this.mapping?.mapped) this.mapping.unmap();
    if (this.fd !== undefined && !this.closed) {
      this.closed = true;
      try {
        native.closeFd(this.fd);
      } catch {
        // already closed
      }
    }
  }
  private closed = false;

  read(offset: number, count: number): Uint8Array | Promise<Uint8Array> {
    const out = new Uint8Array(count);
    if (this.isSimpleRegisterAccess(offset, count)) {
      // Fast path: one aligned 1/2/4-byte register access (doorbells, status reads).
      const r = this.readPiece({ zone: 'regs', offset, size: count }, out, offset);
      return r instanceof Promise ? r.then(() => out) : out;
    }
    const pieces = this.plan(offset, count, this.layout.options?.read64 !== undefined);
    for (let i = 0; i < pieces.length; i++) {
      const r = this.readPiece(pieces[i]!, out, offset);
      if (r instanceof Promise) return this.readRest(r, pieces, i + 1, out, offset);
    }
    return out;
  }

  write(offset: number, data: Uint8Array): void | Promise<void> {
    if (this.isSimpleRegisterAccess(offset, data.length))
      return this.writePiece({ zone: 'regs', offset, size: data.length }, data, offset);
    const pieces = this.plan(offset, data.length, this.layout.options?.write64 !== undefined);
    for (let i = 0; i < pieces.length; i++) {
      const r = this.writePiece(pieces[i]!, data, offset);
      if (r instanceof Promise) return this.writeRest(r, pieces, i + 1, data, offset);
    }
  }

  private async readRest(
    first: Promise<void>,
    pieces: Piece[],
    from: number,
    out: Uint8Array,
    base: number,
  ): Promise<Uint8Array> {
    await first;
    for (let i = from; i < pieces.length; i++) await this.readPiece(pieces[i]!, out, base);
    return out;
  }

  private async writeRest(
    first: Promise<void>,
    pieces: Piece[],
    from: number,
    data: Uint8Array,
    base: number,
  ): Promise<void> {
    await first;
    for (let i = from; i < pieces.length; i++) await this.writePiece(pieces[i]!, data, base);
  }

  private readPiece(p: Piece, out: Uint8Array, base: number): void | Promise<void> {
    const dst = out.subarray(p.offset - base, p.offset - base + p.size);
    if (p.zone === 'memory') {
      dst.set(this.bytes!.subarray(p.offset, p.offset + p.size));
      return;
    }
    if (p.zone === 'msix') {
      this.msix!.read(this.index, p.offset, dst);
      return;
    }
    const o = this.layout.options;
    if (p.size === 8) {
      let r: bigint | Promise<bigint>;
      try {
        r = o!.read64!(p.offset);
      } catch (err) {
        return this.handlerThrew('read64', p, err);
      }
      if (r instanceof Promise)
        return r.then(
          (v) => putBig(dst, v),
          (err: unknown) => this.handlerThrew('read64', p, err),
        );
      putBig(dst, r);
      return;
    }
    if (!o?.read) {
      this.log.debug({ bar: this.index, offset: p.offset, size: p.size }, 'read of a BAR without a read handler: 0');
      return;
    }
    let r: number | Promise<number>;
    try {
      r = o.read(p.offset, p.size as AccessSize);
    } catch (err) {
      return this.handlerThrew('read', p, err);
    }
    if (r instanceof Promise)
      return r.then(
        (v) => putNumber(dst, v),
        (err: unknown) => this.handlerThrew('read', p, err),
      );
    putNumber(dst, r);
  }

  /**
   * A register handler failed. A VfioUserError is the author's chosen errno and
   * goes back as it is; anything else is a bug in the handler: logged (rate
   * limited: the guest can repeat the access at will) and answered with EIO.
   */
  private handlerThrew(handler: 'read' | 'write' | 'read64' | 'write64', p: Piece, err: unknown): never {
    if (err instanceof VfioUserError) throw err;
    const at = `0x${p.offset.toString(16)}`;
    this.limiter.error(
      'register-handler-threw',
      { bar: this.index, offset: at, size: p.size, handler, err },
      `BAR ${this.index} ${handler} handler threw at ${at}: answering EIO`,
    );
    throw new VfioUserError(
      Errno.EIO,
      `BAR ${this.index} ${handler} handler threw at ${at}: ${err instanceof Error ? err.message : String(err)}`,
    );
  }

  private writePiece(p: Piece, data: Uint8Array, base: number): void | Promise<void> {
    const src = data.subarray(p.offset - base, p.offset - base + p.size);
    if (p.zone === 'memory') {
      this.bytes!.set(src, p.offset);
      return;
    }
    if (p.zone === 'msix') {
      this.msix!.write(this.index, p.offset, src);
      return;
    }
    const o = this.layout.options;
    const handler = p.size === 8 ? 'write64' : 'write';
    if (p.size !== 8 && !o?.write) {
      this.log.debug(
        { bar: this.index, offset: p.offset, size: p.size },
        'write to a BAR without a write handler: ignored',
      );
      return;
    }
    let r: void | Promise<void>;
    try {
      r = p.size === 8 ? o!.write64!(p.offset, getBig(src)) : o!.write!(p.offset, p.size as AccessSize, getNumber(src));
    } catch (err) {
      return this.handlerThrew(handler, p, err);
    }
    if (r instanceof Promise) return r.catch((err: unknown) => this.handlerThrew(handler, p, err));
    return r;
  }

  private isSimpleRegisterAccess(offset: number, count: number): boolean {
    if ((count !== 4 && count !== 2 && count !== 1) || offset % count !== 0) return false;
    const { zone, zoneEnd } = this.zoneAt(offset);
    return zone === 'regs' && offset + count <= zoneEnd;
  }

  /** Cut [offset, offset+count) into zone runs, and register runs into aligned accesses. */
  private plan(offset: number, count: number, wide: boolean): Piece[] {
    const pieces: Piece[] = [];
    let at = offset;
    const end = offset + count;
    // The connection checks ranges against the BAR's size; a direct caller that breaks that
    // contract gets an error here instead of a loop that never advances past the BAR's end.
    if (!Number.isSafeInteger(offset) || offset < 0 || count < 0 || end > this.layout.size) {
      throw new RangeError(`BAR ${this.index}: ${offset}+${count} beyond its ${this.layout.size} bytes`);
    }
    while (at < end) {
      const { zone, zoneEnd } = this.zoneAt(at);
      const stop = Math.min(end, zoneEnd);
      if (zone !== 'regs') {
        pieces.push({ zone, offset: at, size: stop - at });
        at = stop;
        continue;
      }
      while (at < stop) {
        const left = stop - at;
        let size = 1;
        if (wide && left >= 8 && at % 8 === 0) size = 8;
        else if (left >= 4 && at % 4 === 0) size = 4;
        else if (left >= 2 && at % 2 === 0) size = 2;
        pieces.push({ zone, offset: at, size });
        at += size;
      }
    }
    return pieces;
  }

  private zoneAt(at: number): { zone: Zone; zoneEnd: number } {
    let next = this.layout.size;
    for (const a of this.layout.memory) {
      if (at >= a.offset && at < a.offset + a.size) return { zone: 'memory', zoneEnd: a.offset + a.size };
      if (a.offset > at) next = Math.min(next, a.offset);
    }
    const msixEnd = this.msix?.claim(this.index, at);
    if (msixEnd !== undefined) return { zone: 'msix', zoneEnd: msixEnd };
    if (this.msix) {
      const l = this.msix.layout;
      if (l.tableBar === this.index && l.tableOffset > at) next = Math.min(next, l.tableOffset);
      if (l.pbaBar === this.index && l.pbaOffset > at) next = Math.min(next, l.pbaOffset);
    }
    return { zone: 'regs', zoneEnd: next };
  }
}

function putNumber(dst: Uint8Array, value: number): void {
  let v = typeof value === 'number' && Number.isFinite(value) ? value >>> 0 : 0;
  for (let i = 0; i < dst.length; i++) {
    dst[i] = v & 0xff;
    v >>>= 8;
  }
}

function getNumber(src: Uint8Array): number {
  let v = 0;
  for (let i = src.length - 1; i >= 0; i--) v = v * 256 + src[i]!;
  return v;
}

function putBig(dst: Uint8Array, value: bigint): void {
  let v = typeof value === 'bigint' ? BigInt.asUintN(64, value) : 0n;
  for (let i = 0; i < dst.length; i++) {
    dst[i] = Number(v & 0xffn);
    v >>= 8n;
  }
}

function getBig(src: Uint8Array): bigint {
  let v = 0n;
  for (let i = src.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(src[i]!);
  return v;
}
