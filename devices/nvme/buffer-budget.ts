/**
 * Host memory for bounce buffers, per controller: what a command needs when
 * it cannot move data straight between the file and guest memory (guest
 * RAM served by DMA messages, Compare's two copies). Without a budget a
 * guest with 256 commands of 1 MiB in flight would make us hold 256-512
 * MiB; with it, commands wait their turn (first come, first served) and a
 * controller holds at most `limit` bytes of buffers. The fast path
 * (fd-backed guest memory, Read and Write) never takes from it.
 */

export class BufferBudget {
  private used = 0;
  private readonly waiting: { bytes: number; resolve: () => void }[] = [];

  /** `limit`: bytes of buffers at once (at least the largest single request). */
  constructor(readonly limit: number) {}

  /** Resolves once `bytes` are reserved (give them back with release). */
  take(bytes: number): Promise<void> {
    if (this.waiting.length === 0 && this.used + bytes <= this.limit) {
      this.used += bytes;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push({ bytes, resolve }));
  }

  /** Give back what take() reserved; the oldest waiters that now fit go on. */
  release(bytes: number): void {
    this.used -= bytes;
    while (this.waiting.length > 0 && this.used + this.waiting[0]!.bytes <= this.limit) {
      const next = this.waiting.shift()!;
      this.used += next.bytes;
      next.resolve();
    }
  }

  /** Bytes reserved now. */
  get inUse(): number {
    return this.used;
  }
}
