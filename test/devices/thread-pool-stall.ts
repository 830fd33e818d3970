/**
 * A host whose file I/O is stuck: every libuv thread-pool thread of this
 * process blocks in a read of an empty FIFO until release(). The NVMe
 * controller's file reads, writes and fdatasyncs (all on the thread pool)
 * then wait in the pool's queue, as behind a disk that stopped answering.
 * Nothing of the server is replaced: the real controller does real I/O on a
 * real file, it just does not finish yet.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants as fsc, openSync, read, stat, writeSync } from 'node:fs';
import { join } from 'node:path';

/** More reads than any thread pool we run with (UV_THREADPOOL_SIZE default 4). */
const BLOCKERS = 64;

export class ThreadPoolStall {
  private released = false;

  private constructor(
    private readonly fd: number,
    private readonly done: Promise<void>,
  ) {}

  /** Block the pool (a FIFO in `dir`); throws unless a probe on the pool really waits. */
  static async start(dir: string): Promise<ThreadPoolStall> {
    const path = join(dir, `stall-${process.pid}-${Date.now()}.fifo`);
    execFileSync('mkfifo', [path]);
    const fd = openSync(path, fsc.O_RDWR); // a FIFO opened read-write never blocks the open
    const reads: Promise<void>[] = [];
    for (let i = 0; i < BLOCKERS; i++) {
      reads.push(new Promise((resolve) => read(fd, Buffer.alloc(1), 0, 1, null, () => resolve())));
    }
    const stall = new ThreadPoolStall(
      fd,
      Promise.all(reads).then(() => undefined),
    );
    const probed = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(true), 200);
      stat(dir, () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (!probed) {
      await stall.release();
      throw new Error(`ThreadPoolStall: the thread pool has more than ${BLOCKERS} threads`);
    }
    return stall;
  }

  /** Let the pool go: every blocked read gets its byte. Resolves when they all returned. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    writeSync(this.fd, Buffer.alloc(BLOCKERS));
    await this.done;
    closeSync(this.fd);
  }
}
