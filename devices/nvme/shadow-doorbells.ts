/**
 * Shadow doorbells with EventIdx (Doorbell Buffer Config, NVMe 1.3): the
 * driver writes new SQ tails / CQ heads into a page of guest memory and only
 * rings the MMIO doorbell when the value passes the EventIdx we publish in a
 * second page. Slots follow the doorbell layout: SQ y at 2y, CQ y at 2y+1.
 *
 * Only fd-backed pages are accepted (reading them by DMA message would cost
 * more than the doorbell writes it saves). The client may unmap and map the
 * memory again at any time (QEMU does when its memory map changes): a page
 * that is not mapped right now reads as undefined and takes no stores, and
 * is found again once it is mapped back. Stores are sequentially consistent
 * (Atomics), so an EventIdx store is ordered before our next shadow load; the
 * driver does the mirror image with mb().
 */
import { PAGE_SIZE } from './constants.js';
import type { NvmeDma } from './host.js';
import type { CompletionQueue, SubmissionQueue } from './queues.js';

export const sqSlot = (qid: number): number => 2 * qid;
export const cqSlot = (qid: number): number => 2 * qid + 1;

export class ShadowDoorbells {
  private pages: { dbs?: Int32Array; eis?: Int32Array } = {};

  private constructor(
    private readonly dma: NvmeDma,
    /** Guest address of the shadow doorbell page. */
    readonly dbs: bigint,
    /** Guest address of the EventIdx page. */
    readonly eis: bigint,
  ) {}

  /**
   * Shadow doorbells of a loaded state (addresses checked by state.ts): the
   * pages need not be mapped yet (a migration destination maps memory when
   * it likes); their contents are guest memory, migrated with it.
   */
  static restore(dma: NvmeDma, dbs: bigint, eis: bigint): ShadowDoorbells {
    return new ShadowDoorbells(dma, dbs, eis);
  }

  /**
   * Both pages page-aligned, distinct, and in fd-backed guest memory, or
   * undefined. One page for both (SPDK refuses it too) would make every
   * EventIdx we publish a shadow tail the guest never wrote: the poller's
   * "do not ring" value would read back as a submission of size - 1 stale
   * entries. (A guest can still alias the two through two DMA maps of one
   * page; the command engine's per-turn and per-SQ limits bound that.)
   */
  static open(dma: NvmeDma, dbs: bigint, eis: bigint): ShadowDoorbells | undefined {
    const mask = BigInt(PAGE_SIZE - 1);
    if ((dbs & mask) !== 0n || (eis & mask) !== 0n || dbs === 0n || eis === 0n || dbs === eis) return undefined;
    const s = new ShadowDoorbells(dma, dbs, eis);
    return s.page('dbs') && s.page('eis') ? s : undefined;
  }

  /** The page as dwords (cached; re-resolved when its mapping went away: a detached view has length 0); undefined while unmapped. */
  private page(which: 'dbs' | 'eis'): Int32Array | undefined {
    const cached = this.pages[which];
    if (cached && cached.length !== 0) return cached;
    let view: Uint8Array | undefined;
    try {
      view = this.dma.view(which === 'dbs' ? this.dbs : this.eis, PAGE_SIZE);
    } catch {
      view = undefined;
    }
    if (!view) return undefined;
    return (this.pages[which] = new Int32Array(view.buffer, view.byteOffset, PAGE_SIZE / 4));
  }

  /** Forget the cached pages (bus mastering went off: the next access asks the DMA space, which refuses it). */
  dropViews(): void {
    this.pages = {};
  }

  /** The shadow doorbell value in `slot`. */
  read(slot: number): number | undefined {
    const p = this.page('dbs');
    return p ? Atomics.load(p, slot) >>> 0 : undefined;
  }

  write(slot: number, value: number): void {
    const p = this.page('dbs');
    if (!p) return;
    Atomics.store(p, slot, value | 0);
    this.dma.markDirty?.(this.dbs + BigInt(slot * 4), 4);
  }

  /** Publish EventIdx for `slot` (sequentially consistent). False while the page is not mapped. */
  setEventIdx(slot: number, value: number): boolean {
    const p = this.page('eis');
    if (!p) return false;
    Atomics.store(p, slot, value | 0);
    this.dma.markDirty?.(this.eis + BigInt(slot * 4), 4); // a cached page: dirty logging cannot see the store
    return true;
  }

  /** Newly configured: start from the doorbell values we know, and ask for a write on the next submission. */
  seed(sqs: readonly (SubmissionQueue | undefined)[], cqs: readonly (CompletionQueue | undefined)[]): void {
    for (const sq of sqs) {
      if (!sq || sq.id === 0) continue;
      this.write(sqSlot(sq.id), sq.tail);
      this.setEventIdx(sqSlot(sq.id), sq.tail);
    }
    for (const cq of cqs) {
      if (!cq || cq.id === 0) continue;
      this.write(cqSlot(cq.id), cq.head);
      this.setEventIdx(cqSlot(cq.id), (cq.head - 1) & 0xffff);
    }
  }
}
