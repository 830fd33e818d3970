/**
 * Dirty-page logging (DEVICE_FEATURE DMA_LOGGING_START / STOP / REPORT): which
 * pages of the client's memory the device wrote while logging was on, so a
 * VMM migrating the guest copies them again.
 *
 * One bitmap per DMA region, one bit per logging page counted from the
 * region's start (as libvfio-user keeps them, which is why a REPORT must start
 * at a region's base). Bitmaps are sparse (chunks of 32768 pages allocated on
 * first write), so a large, mostly clean region costs nothing.
 *
 * Two kinds of marks:
 * - dirty: a write happened (DmaSpace.write, a message DMA_WRITE, a writable
 *   pin when taken and when released, markDirty()). A REPORT returns and
 *   clears them.
 * - sticky: the pages under a writable view() handed out while logging: the
 *   library cannot see when the device writes through it, so they are
 *   reported dirty in every REPORT until the region is unmapped or logging
 *   stops (over-reporting is safe, missing a write is not).
 */
import type { DmaRegion } from './region.js';

const CHUNK_BITS = 1 << 15;
const CHUNK_WORDS = CHUNK_BITS / 32;

/** A set of page numbers, stored as sparse 32768-bit chunks. */
class PageBitmap {
  readonly #chunks = new Map<number, Uint32Array>();

  get empty(): boolean {
    return this.#chunks.size === 0;
  }

  /** Set pages [first, last]. */
  setRange(first: number, last: number): void {
    for (let p = first; p <= last; p++) {
      const c = Math.floor(p / CHUNK_BITS);
      let chunk = this.#chunks.get(c);
      if (!chunk) {
        chunk = new Uint32Array(CHUNK_WORDS);
        this.#chunks.set(c, chunk);
      }
      const bit = p - c * CHUNK_BITS;
      chunk[bit >>> 5]! |= 1 << (bit & 31);
    }
  }

  /** Call `fn` for every set page below `end`, in no particular order. */
  forEach(end: number, fn: (page: number) => void): void {
    for (const [c, chunk] of this.#chunks) {
      const base = c * CHUNK_BITS;
      if (base >= end) continue;
      for (let w = 0; w < CHUNK_WORDS; w++) {
        let word = chunk[w]!;
        while (word !== 0) {
          const bit = 31 - Math.clz32(word & -word);
          word &= word - 1;
          const page = base + w * 32 + bit;
          if (page < end) fn(page);
        }
      }
    }
  }

  /** Clear pages below `end` (whole chunks are dropped when they empty). */
  clearBelow(end: number): void {
    for (const [c, chunk] of this.#chunks) {
      const base = c * CHUNK_BITS;
      if (base >= end) continue;
      if (base + CHUNK_BITS <= end) {
        this.#chunks.delete(c);
        continue;
      }
      const bits = end - base;
      chunk.fill(0, 0, bits >>> 5);
      if (bits & 31) chunk[bits >>> 5]! &= ~((1 << (bits & 31)) - 1);
      if (chunk.every((w) => w === 0)) this.#chunks.delete(c);
    }
  }
}

interface RegionLog {
  dirty: PageBitmap;
  sticky: PageBitmap;
}

/** A range of IOVA to log (DMA_LOGGING_START's ranges). */
export interface LoggedRange {
  iova: bigint;
  length: bigint;
}

export class DirtyLog {
  #pageSize = 0;
  /** Sorted, non-overlapping; empty = every write is logged. */
  #ranges: readonly LoggedRange[] = [];
  readonly #regions = new Map<DmaRegion, RegionLog>();

  /** Whether logging is on. */
  get active(): boolean {
    return this.#pageSize !== 0;
  }

  /** The logging page size (0 when off). */
  get pageSize(): number {
    return this.#pageSize;
  }

  /** Start (or, with the same page size, re-start with new ranges: the marks so far stay). */
  start(pageSize: number, ranges: readonly LoggedRange[]): void {
    this.#pageSize = pageSize;
    this.#ranges = [...ranges].sort((a, b) => (a.iova < b.iova ? -1 : a.iova > b.iova ? 1 : 0));
  }

  /** Stop and forget every mark. */
  stop(): void {
    this.#pageSize = 0;
    this.#ranges = [];
    this.#regions.clear();
  }

  /** The region left the address space: its marks go with it. */
  forget(region: DmaRegion): void {
    this.#regions.delete(region);
  }

  #log(region: DmaRegion): RegionLog {
    let log = this.#regions.get(region);
    if (!log) {
      log = { dirty: new PageBitmap(), sticky: new PageBitmap() };
      this.#regions.set(region, log);
    }
    return log;
  }

  /** Mark [gpa, gpa+length) of `region` written (clipped to the region and to the logged ranges). */
  mark(region: DmaRegion, gpa: bigint, length: number, sticky = false): void {
    if (this.#pageSize === 0 || length <= 0) return;
    const start = gpa > region.addr ? gpa : region.addr;
    const end0 = gpa + BigInt(length);
    const end = end0 < region.end ? end0 : region.end;
    if (end <= start) return;
    if (this.#ranges.length === 0) {
      this.#markSpan(region, start, end, sticky);
      return;
    }
    for (const r of this.#ranges) {
      const rs = r.iova > start ? r.iova : start;
      const rEnd = r.iova + r.length;
      const re = rEnd < end ? rEnd : end;
      if (rs < re) this.#markSpan(region, rs, re, sticky);
    }
  }

  #markSpan(region: DmaRegion, start: bigint, end: bigint, sticky: boolean): void {
    const ps = this.#pageSize;
    const first = Math.floor(Number(start - region.addr) / ps);
    const last = Math.floor((Number(end - region.addr) - 1) / ps);
    const log = this.#log(region);
    (sticky ? log.sticky : log.dirty).setRange(first, last);
  }

  /**
   * The bitmap of [region.addr, region.addr + length) at `reportPageSize`
   * (one bit per report page, LSB first, whole u64s), and clear the dirty
   * marks it covered (logging pages wholly inside the range; a page cut by
   * the range's end stays dirty and is reported again). The caller checked
   * that logging is on, length <= region.size and the page sizes.
   */
  report(region: DmaRegion, length: number, reportPageSize: number): Uint8Array {
    const bits = Math.ceil(length / reportPageSize);
    const out = new Uint8Array(Math.ceil(bits / 64) * 8);
    const log = this.#regions.get(region);
    if (!log) return out;
    const ps = this.#pageSize;
    const pages = Math.ceil(length / ps);
    const put = (page: number): void => {
      const from = page * ps;
      const to = Math.min(from + ps, length);
      const firstBit = Math.floor(from / reportPageSize);
      const lastBit = Math.floor((to - 1) / reportPageSize);
      for (let b = firstBit; b <= lastBit; b++) out[b >>> 3]! |= 1 << (b & 7);
    };
    log.dirty.forEach(pages, put);
    log.sticky.forEach(pages, put);
    const whole = length === Number(region.size) ? pages : Math.floor(length / ps);
    log.dirty.clearBelow(whole);
    if (log.dirty.empty && log.sticky.empty) this.#regions.delete(region);
    return out;
  }
}
