/**
 * One NVMe namespace: a raw file (created sparse at `size` if missing) or RAM.
 * Reads first try a synchronous preadv2(RWF_NOWAIT) (readNowait):
 * data already in the page cache is copied in the same event-loop turn and
 * nothing ever blocks. Whatever is not cached, and every write and fdatasync,
 * goes through libuv's thread pool; guest views handed to it are pinned by
 * the caller (DmaSpace.pin), so an unmap waits for them.
 *
 * Deallocate (DSM) punches a hole in the file (fallocate 'punch-hole') so
 * the space is returned and the blocks read as zeros; Write Zeroes uses
 * fallocate 'zero-range' where the file system has it.
 */
import {
  closeSync,
  fdatasync,
  fstatSync,
  ftruncateSync,
  openSync,
  read,
  readv,
  write,
  writev,
  constants as fsc,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { fallocate, fallocateSync, NOWAIT_UNSUPPORTED, readNowait, type FallocateMode } from 'vfio-user-ts';
import { ReadAhead } from './readahead.js';
import { WriteBehind } from './write-behind.js';

/** How to build a namespace. */
export interface NamespaceOptions {
  /** Backing file. Absent: memory-backed (lost when the process exits). */
  path?: string;
  /** Bytes. Required for memory namespaces and for files that do not exist yet; an existing file keeps its size when absent. */
  size?: number;
  /** Logical block size. Default 512. */
  lbaSize?: 512 | 4096;
  /** Serve cached reads synchronously with preadv2(RWF_NOWAIT) (file namespaces). Default true. */
  pageCacheReads?: boolean;
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

/** True for the errno a file system gives for a fallocate mode it does not implement. */
function isUnsupported(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'EOPNOTSUPP';
}

/**
 * Whether the file system under `fd` punches holes: punches one past both the
 * end of the file and the namespace (KEEP_SIZE: a no-op for the data, but it
 * still fails with EOPNOTSUPP where punching is not implemented).
 */
function canPunchHoles(fd: number, namespaceSize: number): boolean {
  try {
    fallocateSync(fd, 'punch-hole', Math.max(fstatSync(fd).size, namespaceSize), 4096);
    return true;
  } catch {
    return false;
  }
}

type Vectored = (
  fd: number,
  buffers: readonly NodeJS.ArrayBufferView[],
  position: number,
  cb: (err: NodeJS.ErrnoException | null, bytes: number) => void,
) => void;

/** Sum of the views' lengths. */
function totalLength(views: readonly Uint8Array[]): number {
  let n = 0;
  for (const v of views) n += v.length;
  return n;
}

/** `views` without their first `skip` bytes. */
function skipBytes(views: readonly Uint8Array[], skip: number): Uint8Array[] {
  const rest: Uint8Array[] = [];
  for (const v of views) {
    if (skip >= v.length) {
      skip -= v.length;
      continue;
    }
    rest.push(skip > 0 ? v.subarray(skip) : v);
    skip = 0;
  }
  return rest;
}

/** preadv/pwritev the whole of `views` (one syscall in the common case; short transfers continue where they stopped). */
async function vectored(
  op: Vectored,
  fd: number,
  views: readonly Uint8Array[],
  position: number,
  zeroFillAtEof: boolean,
): Promise<void> {
  const rest = views.slice();
  let pos = position;
  while (rest.length > 0) {
    const n = await new Promise<number>((resolve, reject) =>
      op(fd, rest, pos, (err, bytes) => (err ? reject(err) : resolve(bytes))),
    );
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

/** Memory namespaces zero at most this much per event-loop turn (a memset of ~50-100 us). */
const ZERO_SLICE = 1 << 20;

export class Namespace {
  readonly nsid: number;
  readonly lbaSize: 512 | 4096;
  /** log2(lbaSize). */
  readonly lbaShift: number;
  /** Size in logical blocks. */
  readonly blocks: number;
  /** The backing file; undefined for a memory namespace. */
  readonly path: string | undefined;
  /** NGUID (16 bytes), derived from the controller serial and the nsid: stable across restarts. */
  readonly nguid: Uint8Array;
  private fd: number | undefined;
  private memory: Uint8Array | undefined;
  /** Writes since the last fdatasync (a flush with nothing dirty is free). */
  private dirty = false;
  private closed = false;
  /** Sequential small reads of the file are served ahead of time (file namespaces only). */
  readonly readAhead: ReadAhead | undefined;
  /**
   * Serve reads synchronously from the page cache when it holds the data
   * (preadv2 RWF_NOWAIT); turned off for good when the file system refuses
   * it. Off: every file read takes the read-ahead / thread-pool path.
   */
  pageCacheReads: boolean;
  /** Starts writeback of written data early, so Flush has less to do (file namespaces). */
  readonly writeBehind: WriteBehind | undefined;
  /** Reads served synchronously from the page cache (whole / partly) and reads that had to go async. */
  readonly cacheStats = { hits: 0, partial: 0, misses: 0 };
  /** The file punches holes (fallocate PUNCH_HOLE): probed when opened, false after any EOPNOTSUPP. */
  private punchHole = false;
  /**
   * Identify promises that deallocated blocks read as zeros (DLFEAT): the
   * probe's answer, kept for the namespace's life (should punching fail
   * later, deallocate writes zeros instead, so the promise holds).
   */
  private readonly deallocatedZeros: boolean;
  /** The file can zero ranges (fallocate ZERO_RANGE): false after the first EOPNOTSUPP (then zeros are written). */
  private zeroRange = true;
  /** close() has begun: no new operation starts. */
  private closing = false;
  /** File operations in progress (read, write, zero, deallocate, flush): close() waits for them before closing the fd. */
  private ops = 0;
  private opsIdle: (() => void)[] = [];
  /** The latest fdatasync in progress: a Flush that finds nothing dirty waits for it (it covers every write so far). */
  private syncing: Promise<void> | undefined;

  constructor(nsid: number, options: NamespaceOptions, serial: string) {
    this.nsid = nsid;
    // Checked at run time: a JS caller or a config file may pass any number.
    const lbaSize: number = options.lbaSize ?? 512;
    if (lbaSize !== 512 && lbaSize !== 4096) throw new RangeError(`namespace ${nsid}: lbaSize must be 512 or 4096`);
    this.lbaSize = lbaSize;
    this.lbaShift = this.lbaSize === 512 ? 9 : 12;
    this.path = options.path;
    this.pageCacheReads = options.pageCacheReads ?? true;
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
    if (this.fd !== undefined) {
      this.readAhead = new ReadAhead((position, dst) => this.readFile(position, dst, dst.length), this.size);
      this.punchHole = canPunchHoles(this.fd, this.size);
      this.writeBehind = new WriteBehind(this.fd);
    }
    this.deallocatedZeros = this.memory !== undefined || this.punchHole;
  }

  /**
   * Deallocated blocks read as zeros (Identify Namespace DLFEAT 0x09): memory
   * namespaces, and files whose file system punches holes.
   */
  get deallocateReadsZeroes(): boolean {
    return this.deallocatedZeros;
  }

  /** Size in bytes (whole blocks). */
  get size(): number {
    return this.blocks * this.lbaSize;
  }

  private checkOpen(): void {
    if (this.closed || this.closing) throw new Error(`namespace ${this.nsid} is closed`);
  }

  /** An operation starts (throws once closing): counted until end(). */
  private begin(): void {
    this.checkOpen();
    this.ops++;
  }

  private end(): void {
    if (--this.ops === 0 && this.opsIdle.length > 0) {
      const waiters = this.opsIdle;
      this.opsIdle = [];
      for (const w of waiters) w();
    }
  }

  /** Zero [position, position+length) of a memory namespace: slices of ZERO_SLICE, a loop turn between them. */
  private async zeroMemory(position: number, length: number): Promise<void> {
    const end = position + length;
    for (let at = position; at < end; at += ZERO_SLICE) {
      if (at > position) await new Promise((resolve) => setImmediate(resolve));
      if (!this.memory) throw new Error(`namespace ${this.nsid} is closed`);
      this.memory.fill(0, at, Math.min(at + ZERO_SLICE, end));
    }
  }

  /** Read `length` bytes at byte `position` into `dst` (from 0). */
  async read(position: number, dst: Uint8Array, length = dst.length): Promise<void> {
    this.begin();
    try {
      if (this.memory) {
        dst.set(this.memory.subarray(position, position + length));
        return;
      }
      const target = dst.subarray(0, length);
      const n = this.readCached([target], position, length);
      if (n === length) return;
      if (n > 0) {
        await vectored(readv, this.fd!, [target.subarray(n)], position + n, true);
        return;
      }
      const cached = this.readAhead?.tryRead(position, [target], length);
      if (cached === true || (cached && (await cached))) return;
      await this.readFile(position, dst, length);
    } finally {
      this.end();
    }
  }

  /**
   * Read what the page cache already holds of [position, position+length)
   * into `views`, synchronously and without blocking: the bytes read (a
   * prefix; 0 when nothing was cached or on any error, which the async path
   * then reports).
   */
  private readCached(views: readonly Uint8Array[], position: number, length: number): number {
    if (!this.pageCacheReads || length === 0 || views.length > 1024) return 0;
    let n: number;
    try {
      n = readNowait(this.fd!, views, position);
    } catch {
      n = 0;
    }
    if (n === NOWAIT_UNSUPPORTED) this.pageCacheReads = false;
    if (n <= 0) {
      this.cacheStats.misses++;
      return 0;
    }
    if (n === length) this.cacheStats.hits++;
    else this.cacheStats.partial++;
    return n;
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
    this.begin();
    try {
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
      this.writeBehind?.wrote(position, src.length);
    } finally {
      this.end();
    }
  }

  /**
   * Serve a read into `views` right now if possible: memory namespaces
   * always, files when the page cache holds every byte (preadv2 RWF_NOWAIT).
   * True when done; false when nothing useful happened (then call readv).
   */
  readvNow(position: number, views: readonly Uint8Array[]): boolean {
    if (this.closed || this.closing) return false;
    if (this.memory) {
      let at = position;
      for (const v of views) {
        v.set(this.memory.subarray(at, at + v.length));
        at += v.length;
      }
      return true;
    }
    const length = totalLength(views);
    return this.readCached(views, position, length) === length;
  }

  /** Read consecutive bytes at `position` straight into `views` (in order). The caller keeps them mapped. */
  async readv(position: number, views: readonly Uint8Array[]): Promise<void> {
    this.begin();
    try {
      if (this.memory) {
        let at = position;
        for (const v of views) {
          v.set(this.memory.subarray(at, at + v.length));
          at += v.length;
        }
        return;
      }
      const length = totalLength(views);
      const n = this.readCached(views, position, length);
      if (n === length) return;
      if (n > 0) {
        await vectored(readv, this.fd!, skipBytes(views, n), position + n, true);
        return;
      }
      const cached = this.readAhead?.tryRead(position, views, length);
      if (cached === true || (cached && (await cached))) return;
      await vectored(readv, this.fd!, views, position, true);
    } finally {
      this.end();
    }
  }

  /** Write `views` (in order) as consecutive bytes at `position`. The caller keeps them mapped. */
  async writev(position: number, views: readonly Uint8Array[]): Promise<void> {
    this.begin();
    try {
      if (this.memory) {
        let at = position;
        for (const v of views) {
          this.memory.set(v, at);
          at += v.length;
        }
        return;
      }
      const length = totalLength(views);
      this.readAhead?.invalidate(position, length);
      try {
        await vectored(writev, this.fd!, views, position, false);
      } finally {
        this.readAhead?.invalidate(position, length);
      }
      this.dirty = true;
      this.writeBehind?.wrote(position, length);
    } finally {
      this.end();
    }
  }

  /**
   * Zero `length` bytes at `position` (Write Zeroes): fallocate ZERO_RANGE
   * (no data written; the blocks stay allocated), or where the file system
   * lacks it (remembered) writes of zeros in chunks of at most 1 MiB.
   * Memory is zeroed in slices (zeroMemory): at most ZERO_SLICE per loop turn.
   */
  async zero(position: number, length: number): Promise<void> {
    this.begin();
    try {
      if (this.memory) {
        await this.zeroMemory(position, length);
        return;
      }
      if (length === 0) return;
      if (this.zeroRange) {
        if (await this.fallocateIfSupported('zero-range', position, length)) return;
        this.zeroRange = false;
      }
      await this.writeZeros(position, length);
    } finally {
      this.end();
    }
  }

  /**
   * Deallocate `length` bytes at `position` (DSM Deallocate, Write Zeroes
   * with DEAC): memory is zeroed; a file gets a hole punched (its blocks are
   * freed and read as zeros). A file system without hole punching: nothing
   * happens (Identify reports DLFEAT 0 there, so the host expects no zeros).
   * Should punching fail with EOPNOTSUPP after the probe found it working,
   * the range is zeroed instead (Identify promised zeros).
   */
  async deallocate(position: number, length: number): Promise<void> {
    this.begin();
    try {
      if (this.memory) {
        await this.zeroMemory(position, length);
        return;
      }
      if (length === 0) return;
      if (this.punchHole) {
        if (await this.fallocateIfSupported('punch-hole', position, length)) return;
        this.punchHole = false;
      }
      if (this.deallocatedZeros) await this.zero(position, length);
    } finally {
      this.end();
    }
  }

  /** fallocateRange, false (nothing done) where the file system does not implement `mode` (EOPNOTSUPP). */
  private async fallocateIfSupported(mode: FallocateMode, position: number, length: number): Promise<boolean> {
    try {
      await this.fallocateRange(mode, position, length);
      return true;
    } catch (err) {
      if (!isUnsupported(err)) throw err;
      return false;
    }
  }

  /** fallocate on the file with read-ahead invalidated around it; marks the namespace dirty (a Flush must fdatasync). */
  private async fallocateRange(mode: FallocateMode, position: number, length: number): Promise<void> {
    this.readAhead?.invalidate(position, length);
    try {
      await fallocate(this.fd!, mode, position, length);
    } finally {
      this.readAhead?.invalidate(position, length);
    }
    this.dirty = true;
  }

  /** Write zeros over [position, position+length) in chunks of at most 1 MiB. */
  private async writeZeros(position: number, length: number): Promise<void> {
    const chunk = new Uint8Array(Math.min(length, 1 << 20));
    for (let done = 0; done < length; done += chunk.length) {
      await this.write(position + done, chunk.subarray(0, Math.min(chunk.length, length - done)));
    }
  }

  /**
   * Make every completed write durable (fdatasync). Free when nothing was
   * written since the last flush, except that a flush still in progress is
   * waited for (it covers the writes this one must cover: two Flush
   * commands in a row both complete only after the data is on disk).
   */
  async flush(): Promise<void> {
    if (this.fd === undefined || this.closed) return;
    if (!this.dirty) {
      await this.syncing;
      return;
    }
    this.dirty = false;
    const fd = this.fd;
    this.ops++;
    const sync = new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
    this.syncing = sync;
    try {
      await sync;
    } catch (err) {
      this.dirty = true; // not durable: the next flush tries again
      throw err;
    } finally {
      if (this.syncing === sync) this.syncing = undefined;
      this.end();
    }
  }

  /**
   * Flush and close the file. Operations already running finish first (the
   * fd must outlive every syscall on it); none starts once close() began.
   * Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed || this.closing) return;
    this.closing = true;
    await this.readAhead?.close();
    await this.writeBehind?.idle();
    if (this.ops > 0) await new Promise<void>((resolve) => this.opsIdle.push(resolve));
    await this.flush();
    this.closed = true;
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.memory = undefined;
  }
}
