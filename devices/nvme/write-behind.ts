/**
 * Early writeback ("write-behind") for a namespace's backing file: once a
 * megabyte or more was written since the last kick, ask the kernel to start
 * writing those pages to disk (sync_file_range SYNC_FILE_RANGE_WRITE, on the
 * thread pool, not waited for). A later Flush (fdatasync) then finds little
 * left to write, instead of all the dirty data at once; this is what
 * databases do (RocksDB's bytes_per_sync, PostgreSQL's backend_flush_after).
 *
 * It changes nothing about durability: only fdatasync makes data durable.
 * At most one kick is in flight; ranges written meanwhile merge into the
 * next one. A file (system) that refuses sync_file_range turns it off.
 */
import { startWriteback } from 'vfio-user-ts';

/** Bytes written between kicks. */
const WRITE_BEHIND_BYTES = 1 << 20;

export class WriteBehind {
  private low = Number.POSITIVE_INFINITY;
  private high = 0;
  private bytes = 0;
  private running: Promise<void> | undefined;
  private off = false;
  /** Kicks issued, and whether the file refused them (then write-behind is off). */
  readonly stats = { kicks: 0, refused: false };

  constructor(
    private readonly fd: number,
    private readonly threshold = WRITE_BEHIND_BYTES,
  ) {}

  /** [position, position+length) reached the page cache. */
  wrote(position: number, length: number): void {
    if (this.off || length === 0) return;
    if (position < this.low) this.low = position;
    if (position + length > this.high) this.high = position + length;
    this.bytes += length;
    if (this.bytes < this.threshold || this.running) return;
    const offset = this.low;
    const span = this.high - this.low;
    this.low = Number.POSITIVE_INFINITY;
    this.high = 0;
    this.bytes = 0;
    this.stats.kicks++;
    this.running = startWriteback(this.fd, offset, span).then(
      () => {
        this.running = undefined;
      },
      () => {
        // EINVAL/ESPIPE/EBADF...: this file does not do it; fdatasync still makes data durable.
        this.running = undefined;
        this.off = true;
        this.stats.refused = true;
      },
    );
  }

  /** Resolves when no kick is in flight (before the file is closed). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }
}
