/**
 * One DMA_MAP'ed range of the client's address space: fd-backed (mmapped,
 * served from memory) or message-only (served by DMA_READ/DMA_WRITE), with the
 * refcount of in-flight users that DMA_UNMAP waits for.
 */
import type { NativeMapping } from '../../native/index.js';
import { DmaMapFlag } from '../../protocol/constants.js';

export class DmaRegion {
  readonly addr: bigint;
  readonly size: bigint;
  /** addr + size (exclusive). */
  readonly end: bigint;
  /** DmaMapFlag bits as mapped. */
  readonly flags: number;
  /** Offset into the client's fd (informational for message-only ranges). */
  readonly offset: bigint;
  /** The mmap, when the client sent an fd. */
  readonly mapping: NativeMapping | undefined;
  /** Bytes between the start of the mapping and `addr` (the fd offset rounded down to a page). */
  readonly delta: number;
  /** Window size of the mapping's ArrayBuffers. */
  readonly windowSize: number;
  /**
   * The mapping's ArrayBuffer windows, read once (the native getter costs a
   * call per view). After an unmap they are detached: byteLength 0, so view()
   * answers undefined and nothing reads freed memory.
   */
  readonly #buffers: readonly ArrayBuffer[];
  #users = 0;
  #drained: (() => void)[] = [];
  /** Set once the region was removed from the space: no new users. */
  removed = false;

  constructor(
    addr: bigint,
    size: bigint,
    flags: number,
    offset: bigint,
    mapping: NativeMapping | undefined,
    delta: number,
    windowSize: number,
  ) {
    this.addr = addr;
    this.size = size;
    this.end = addr + size;
    this.flags = flags;
    this.offset = offset;
    this.mapping = mapping;
    this.delta = delta;
    this.windowSize = windowSize;
    this.#buffers = mapping ? mapping.buffers : [];
  }

  get readable(): boolean {
    return (this.flags & DmaMapFlag.READ) !== 0;
  }
  get writable(): boolean {
    return (this.flags & DmaMapFlag.WRITE) !== 0;
  }

  /**
   * One more user: a DMA_UNMAP of this region waits until it is released.
   * Devices use DmaSpace.pin() or hold(), which pair it with release().
   */
  acquire(): void {
    this.#users++;
  }

  /** One user fewer (never below zero); the last one lets a waiting unmap proceed. */
  release(): void {
    if (this.#users === 0) return;
    if (--this.#users === 0) {
      const waiters = this.#drained;
      this.#drained = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves when no user holds the region. */
  drained(): Promise<void> {
    if (this.#users === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drained.push(resolve));
  }

  /**
   * A zero-copy view of [gpa, gpa+length) inside this fd-backed region, or
   * undefined when it crosses an ArrayBuffer window (the caller copies instead).
   */
  view(gpa: bigint, length: number): Uint8Array | undefined {
    if (!this.mapping) return undefined;
    const pos = Number(gpa - this.addr) + this.delta;
    const w = Math.floor(pos / this.windowSize);
    const at = pos - w * this.windowSize;
    if (at + length > this.windowSize) return undefined;
    const buf = this.#buffers[w];
    if (!buf || at + length > buf.byteLength) return undefined;
    return new Uint8Array(buf, at, length);
  }

  /** Copy [gpa, gpa+out.length) of this fd-backed region into `out` (handles window crossings). */
  copyOut(gpa: bigint, out: Uint8Array): void {
    this.#walk(gpa, out.byteLength, (src, done) => out.set(src, done));
  }

  /** Copy `data` into this fd-backed region at gpa. */
  copyIn(gpa: bigint, data: Uint8Array): void {
    this.#walk(gpa, data.byteLength, (dst, done) => dst.set(data.subarray(done, done + dst.byteLength)));
  }

  #walk(gpa: bigint, length: number, fn: (piece: Uint8Array, done: number) => void): void {
    const buffers = this.#buffers;
    let pos = Number(gpa - this.addr) + this.delta;
    for (let done = 0; done < length;) {
      const w = Math.floor(pos / this.windowSize);
      const at = pos - w * this.windowSize;
      const buf = buffers[w]!;
      const n = Math.min(length - done, buf.byteLength - at);
      fn(new Uint8Array(buf, at, n), done);
      done += n;
      pos += n;
    }
  }
}
