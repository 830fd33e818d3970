/**
 * Host-file I/O for storage devices: the Linux calls a device needs to move
 * data between its backing file and guest memory (DmaPin views) without
 * blocking the event loop, and to manage the file's blocks. Node's fs covers
 * plain reads and writes (readv/writev on the thread pool, fdatasync); these
 * fill the gaps:
 *
 * - readNowait: preadv2(RWF_NOWAIT), a read the page cache serves in the
 *   same event-loop turn (no thread-pool round trip), or nothing;
 * - fallocate: free a range's blocks ('punch-hole') or make it read as
 *   zeros ('zero-range'), e.g. for NVMe Deallocate and Write Zeroes;
 * - startWriteback: sync_file_range(WRITE), start writing dirty pages early
 *   so a later fdatasync has less to do.
 *
 * Every function borrows `fd` (the caller opens and closes it) and is
 * Linux-only. Errors carry the errno name in `.code` ('EOPNOTSUPP' where the
 * file system lacks an operation) and the syscall in `.syscall`.
 *
 * ```ts
 * const n = readNowait(fd, pin.views, position);
 * if (n === NOWAIT_UNSUPPORTED) cachedReads = false;      // this file never will
 * else if (n < length) await readRestOnThreadPool(...);   // NOWAIT_WOULD_BLOCK, or a short read
 * await fallocate(fd, 'punch-hole', position, length);     // reads as zeros from now on
 * ```
 */
import {
  FALLOC_PUNCH_HOLE,
  FALLOC_ZERO_RANGE,
  native,
  NOWAIT_UNSUPPORTED,
  NOWAIT_WOULD_BLOCK,
} from '../../native/index.js';

export { NOWAIT_UNSUPPORTED, NOWAIT_WOULD_BLOCK };

/**
 * One preadv2(fd, views, position, RWF_NOWAIT) on the calling thread: reads
 * only what the page cache already holds and never blocks. Returns the bytes
 * read (a prefix of the views, possibly short: continue from there; 0 at end
 * of file), NOWAIT_WOULD_BLOCK (-1) when nothing was cached, or
 * NOWAIT_UNSUPPORTED (-2) when this file (file system, kernel) cannot do
 * RWF_NOWAIT: stop trying on it. The views are filled before it returns, so
 * views of guest memory need no pin beyond the call. At most 1024 views
 * (IOV_MAX). Throws TypeError/RangeError for bad arguments, an errno Error
 * (EBADF, EFAULT...) otherwise.
 */
export function readNowait(fd: number, views: readonly ArrayBufferView[], position: number): number {
  return native.preadvNowait(fd, views, position);
}

/**
 * What fallocate does to [position, position+length), always keeping the
 * file size: 'punch-hole' frees the blocks (they read as zeros, the space
 * returns to the file system); 'zero-range' makes the range read as zeros
 * without writing data (the blocks stay allocated).
 */
export type FallocateMode = 'punch-hole' | 'zero-range';

/** `mode` is checked at run time: a JS caller may pass anything. */
function fallocateFlags(mode: unknown): number {
  if (mode === 'punch-hole') return FALLOC_PUNCH_HOLE;
  if (mode === 'zero-range') return FALLOC_ZERO_RANGE;
  throw new TypeError(`fallocate: mode must be 'punch-hole' or 'zero-range', got ${String(mode)}`);
}

/**
 * fallocate(2) on a worker thread (retried on EINTR). `position` and `length`
 * are non-negative safe integers, length > 0. Rejects with a
 * TypeError/RangeError for bad arguments, else an errno Error: EOPNOTSUPP
 * where the file system does not implement `mode`, EBADF, ENODEV (a pipe)...
 */
export function fallocate(fd: number, mode: FallocateMode, position: number, length: number): Promise<void> {
  let flags: number;
  try {
    flags = fallocateFlags(mode);
  } catch (err) {
    return Promise.reject(err);
  }
  return native.fallocate(fd, flags, position, length);
}

/**
 * fallocate on the calling thread: it blocks, so it is for probes and setup
 * (does this file punch holes?), not the I/O path. Throws what fallocate
 * rejects with.
 */
export function fallocateSync(fd: number, mode: FallocateMode, position: number, length: number): void {
  native.fallocateSync(fd, fallocateFlags(mode), position, length);
}

/**
 * sync_file_range(fd, position, length, SYNC_FILE_RANGE_WRITE) on a worker
 * thread: start writing the range's dirty pages back without waiting for
 * them. It makes nothing durable (fdatasync does); it leaves a later
 * fdatasync less to do. Length 0: to the end of the file. Rejects with an
 * errno Error (ESPIPE for a socket or pipe, EBADF...).
 */
export function startWriteback(fd: number, position: number, length: number): Promise<void> {
  return native.startWriteback(fd, position, length);
}
