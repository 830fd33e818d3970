/**
 * One NVMe namespace: a raw file (created sparse at `size` if missing) or RAM.
 * File I/O goes through libuv's thread pool (fs.read/fs.write/fs.fdatasync),
 * never on the event loop, and always on our own buffers: guest memory is
 * copied synchronously into or out of them, so no guest view ever reaches an
 * async API (the region may be unmapped meanwhile).
 */
import { closeSync, fdatasync, fstatSync, ftruncateSync, openSync, read, readv, write, writev, constants as fsc } from 'node:fs';
import { createHash } from 'node:crypto';
import { ReadAhead } from './readahead.js';

/** How to build a namespace. */
export interface NamespaceOptions {
  /** Backing file. Absent: memory-backed (lost when the process exits). */
  path?: string;
  /** Bytes. Required for memory namespaces and for files that do not exist yet; an existing file keeps its size when absent. */
  size?: number;
  /** Logical block size. Default 512. */
  lbaSize?: 512 | 4096;
}

function readAt(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function writeAt(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    write(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

type Vectored = (fd: number, buffers: readonly NodeJS.ArrayBufferView[], position: number, cb: (err: NodeJS.ErrnoException | null, bytes: number) => void) => void;

/** preadv/pwritev the whole of `views` (one syscall in the common case; short transfers continue where they stopped). */
async function vectored(op: Vectored, fd: number, views: readonly Uint8Array[], position: number, zeroFillAtEof: boolean): Promise<void> {
  let rest = views.slice();
  let pos = position;
  while (rest.length > 0) {
    const n = await new Promise<number>((resolve, reject) => op(fd, rest, pos, (err, bytes) => (err ? reject(err) : resolve(bytes))));
    if (n === 0) {
      if (!zeroFillAtEof) throw new Error('short write');
      for (const v of rest) v.fill(0);
      return;
    }
    pos += n;
    let skip = n;
    while (rest.length > 0 && skip >= rest[0]!.length) skip -= rest.shift()!.length;
    if (skip > 0) rest[0] = rest[0]!.subarray(skip);
  }
}

export class Namespace {
  readonly nsid: number;
  readonly lbaSize: 512 | 4096;
  /** log2(lbaSize). */
  readonly lbaShift: number;
  /** Size in logical blocks. */
  readonly blocks: number;
  readonly path?: string;
  /** NGUID (16 bytes), derived from the controller serial and the nsid: stable across restarts. */
  readonly nguid: Uint8Array;
  private fd: number | undefined;
  private memory: Uint8Array | undefined;
  /** Writes since the last fdatasync (a flush with nothing dirty is free). */
  private dirty = false;
  private closed = false;
  /** Sequential small reads of the file are served ahead of time (file namespaces only). */
  readonly readAhead: ReadAhead | undefined;

  constructor(nsid: number, options: NamespaceOptions, serial: string) {
    this.nsid = nsid;
    this.lbaSize = options.lbaSize ?? 512;
    if (this.lbaSize !== 512 && this.lbaSize !== 4096) throw new RangeError(`namespace ${nsid}: lbaSize must be 512 or 4096`);
    this.lbaShift = this.lbaSize === 512 ? 9 : 12;
    this.path = options.path;
    this.nguid = createHash('sha256').update(`vfio-user-ts nvme ${serial} ns ${nsid}`).digest().subarray(0, 16);
    let size = options.size;
    if (size !== undefined && (!Number.isSafeInteger(size) || size < this.lbaSize)) {
      throw new RangeError(`namespace ${nsid}: size must be a whole number of bytes >= ${this.lbaSize}`);
    }
    if (options.path === undefined) {
      if (size === undefined) throw new RangeError(`namespace ${nsid}: a memory namespace needs a size`);
      this.memory = new Uint8Array(size - (size % this.lbaSize));
      size = this.memory.length;
    } else {
      const fd = openSync(options.path, fsc.O_RDWR | fsc.O_CREAT, 0o644);
      try {
        const current = fstatSync(fd).size;
        if (size === undefined) {
          if (current < this.lbaSize) throw new RangeError(`namespace ${nsid}: ${options.path} is empty; give a size`);
          size = current;
        } else if (current < size) {
          ftruncateSync(fd, size); // sparse
        }
      } catch (err) {
        closeSync(fd);
        throw err;
      }
      this.fd = fd;
    }
    this.blocks = Math.floor(size / this.lbaSize);
    if (this.fd !== undefined) this.readAhead = new ReadAhead((position, dst) => this.readFile(position, dst, dst.length), this.size);
  }

  /** Size in bytes (whole blocks). */
  get size(): number {
    return this.blocks * this.lbaSize;
  }

  private checkOpen(): void {
    if (this.closed) throw new Error(`namespace ${this.nsid} is closed`);
  }

  /** Read `length` bytes at byte `position` into `dst` (from 0). */
  async read(position: number, dst: Uint8Array, length = dst.length): Promise<void> {
    this.checkOpen();
    if (this.memory) {
      dst.set(this.memory.subarray(position, position + length));
      return;
    }
    const cached = this.readAhead?.tryRead(position, [dst.subarray(0, length)], length);
    if (cached === true || (cached && (await cached))) return;
    await this.readFile(position, dst, length);
  }

  private async readFile(position: number, dst: Uint8Array, length: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const n = await readAt(this.fd!, dst, done, length - done, position + done);
      if (n === 0) {
        dst.fill(0, done, length); // file shorter than the namespace: reads as zeros
        return;
      }
      done += n;
    }
  }

  /** Write `src` at byte `position`. */
  async write(position: number, src: Uint8Array): Promise<void> {
    this.checkOpen();
    if (this.memory) {
      this.memory.set(src, position);
      return;
    }
    this.readAhead?.invalidate(position, src.length);
    try {
      let done = 0;
      while (done < src.length) {
        done += await writeAt(this.fd!, src, done, src.length - done, position + done);
      }
    } finally {
      this.readAhead?.invalidate(position, src.length);
    }
    // Marked after the data reached the page cache: a flush that started earlier does not cover it.
    this.dirty = true;
  }

  /** Read consecutive bytes at `position` straight into `views` (in order). The caller keeps them mapped. */
  async readv(position: number, views: readonly Uint8Array[]): Promise<void> {
    this.checkOpen();
    if (this.memory) {
      let at = position;
      for (const v of views) {
        v.set(this.memory.subarray(at, at + v.length));
        at += v.length;
      }
      return;
    }
    const length = views.reduce((n, v) => n + v.length, 0);
    const cached = this.readAhead?.tryRead(position, views, length);
    if (cached === true || (cached && (await cached))) return;
    await vectored(readv as Vectored, this.fd!, views, position, true);
  }

  /** Write `views` (in order) as consecutive bytes at `position`. The caller keeps them mapped. */
  async writev(position: number, views: readonly Uint8Array[]): Promise<void> {
    this.checkOpen();
    if (this.memory) {
      let at = position;
      for (const v of views) {
        this.memory.set(v, at);
        at += v.length;
      }
      return;
    }
    const length = views.reduce((n, v) => n + v.length, 0);
    this.readAhead?.invalidate(position, length);
    try {
      await vectored(writev as Vectored, this.fd!, views, position, false);
    } finally {
      this.readAhead?.invalidate(position, length);
    }
    this.dirty = true;
  }

  /** Zero `length` bytes at `position` (Write Zeroes), in chunks of at most 1 MiB. */
  async zero(position: number, length: number): Promise<void> {
    this.checkOpen();
    if (this.memory) {
      this.memory.fill(0, position, position + length);
      return;
    }
    const chunk = new Uint8Array(Math.min(length, 1 << 20));
    for (let done = 0; done < length; done += chunk.length) {
      await this.write(position + done, chunk.subarray(0, Math.min(chunk.length, length - done)));
    }
  }

  /** Make every completed write durable (fdatasync). Free when nothing was written since the last flush. */
  async flush(): Promise<void> {
    if (this.fd === undefined || this.closed || !this.dirty) return;
    this.dirty = false;
    const fd = this.fd;
    await new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
  }

  /** Flush and close the file. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.readAhead?.close();
    await this.flush();
    this.closed = true;
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.memory = undefined;
  }
}
