/**
 * Read-ahead for sequential reads of a backing file.
 *
 * Every file read costs a thread-pool round trip (the event loop never does
 * file I/O). When small reads (<= 64 KiB) are sequential, this fetches the
 * next window (four times the read size, 128 KiB to 512 KiB) in the background, so later reads inside
 * it are served from memory: synchronously when the window is ready, or by
 * waiting for its fill (never a second read of the same bytes).
 *
 * Coherence: the controller is the only writer of the file. Every write
 * (and zeroing) invalidates overlapping windows when it starts AND when it
 * completes, so a window filled while a write was in flight is dropped too.
 */

/** Smallest and largest window. */
const MIN_WINDOW = 128 * 1024;
const MAX_WINDOW = 512 * 1024;
/** Larger reads go straight to the file (zero copy into guest memory beats a copy out of a window). */
const SMALL_READ = 64 * 1024;
/** Windows kept (a few concurrent sequential streams, and the one being filled). */
const MAX_WINDOWS = 4;

interface Window {
  start: number;
  end: number;
  data: Uint8Array;
  ready: boolean;
  valid: boolean;
  fill: Promise<void>;
}

export type FileReader = (position: number, dst: Uint8Array) => Promise<void>;

function copyOut(w: Window, position: number, views: readonly Uint8Array[]): void {
  let at = position - w.start;
  for (const v of views) {
    v.set(w.data.subarray(at, at + v.length));
    at += v.length;
  }
}

export class ReadAhead {
  private windows: Window[] = [];
  /** End of the last read (sequential detection). */
  private lastEnd = -1;
  /** Reads answered from a ready window / after waiting for a fill / from the file. */
  hits = 0;
  waits = 0;
  misses = 0;
  /** Fills in flight (close() waits for them: the fd must outlive them). */
  private readonly filling = new Set<Promise<void>>();

  constructor(
    private readonly readFile: FileReader,
    private readonly size: number,
  ) {}

  /**
   * Serve [position, position+length) into `views` (in order, caller keeps
   * them valid until the returned promise settles): `true` when served now,
   * a promise resolving true when served from a window being filled, `false`
   * when the caller must read the file. Starts fetching ahead on sequential reads.
   */
  tryRead(position: number, views: readonly Uint8Array[], length: number): boolean | Promise<boolean> {
    const end = position + length;
    const sequential = position === this.lastEnd;
    this.lastEnd = end;
    if (length > SMALL_READ) return false;
    const windowSize = Math.min(MAX_WINDOW, Math.max(MIN_WINDOW, 4 * length));
    const w = this.windows.find((x) => x.valid && x.start <= position && end <= x.end);
    if (w) {
      // Streaming: fetch the next window while this one still has room.
      if (w.end - end < (w.end - w.start) / 2) this.prefetch(w.end, windowSize);
      if (w.ready) {
        copyOut(w, position, views);
        this.hits++;
        return true;
      }
      this.waits++;
      return w.fill.then(() => {
        if (!w.valid || !w.ready) return false;
        copyOut(w, position, views);
        return true;
      });
    }
    this.misses++;
    if (sequential) this.prefetch(end, windowSize);
    return false;
  }

  /** Drop every window overlapping [position, position+length). */
  invalidate(position: number, length: number): void {
    const end = position + length;
    for (const w of this.windows) {
      if (w.start < end && position < w.end) w.valid = false;
    }
    this.windows = this.windows.filter((w) => w.valid);
  }

  private prefetch(start: number, windowSize: number): void {
    if (start >= this.size) return;
    if (this.windows.some((w) => w.valid && w.start <= start && start < w.end)) return;
    const end = Math.min(this.size, start + windowSize);
    // Not zero-filled: the fill overwrites every byte (or zero-fills past EOF).
    const w: Window = {
      start,
      end,
      data: Buffer.allocUnsafeSlow(end - start),
      ready: false,
      valid: true,
      fill: Promise.resolve(),
    };
    const fill: Promise<void> = this.readFile(start, w.data)
      .then(
        () => {
          w.ready = true;
        },
        () => {
          w.valid = false;
          this.windows = this.windows.filter((x) => x !== w);
        },
      )
      .finally(() => this.filling.delete(fill));
    w.fill = fill;
    this.filling.add(fill);
    this.windows.push(w);
    if (this.windows.length > MAX_WINDOWS) this.windows.shift();
  }

  /** Stop: forget every window and wait for fills in flight. */
  async close(): Promise<void> {
    this.windows = [];
    this.lastEnd = -1;
    await Promise.all([...this.filling]);
  }
}
