/**
 * Posting completions: a 16-byte entry in the CQ's guest memory (the phase
 * tag written last), then the CQ's interrupt (cq-interrupts.ts). A full CQ
 * keeps completions pending, in order, until the host moves the head (the
 * CQ head doorbell, or with shadow doorbells the shadow head, read when the
 * CQ looks full).
 *
 * It also ends each command's accounting (SubmissionQueue.inflight): a
 * command counts against its SQ from fetch until its entry is written (or
 * dropped), so an SQ whose CQ stays full stops fetching at its size and is
 * told to go on (`room`) when an entry of it is written.
 */
import { CQE_SIZE, Status } from './constants.js';
import type { CqInterrupts } from './cq-interrupts.js';
import type { NvmeDma } from './host.js';
import { queueView, type CompletionQueue, type SubmissionQueue } from './queues.js';
import { cqSlot, type ShadowDoorbells } from './shadow-doorbells.js';

export class CqWriter {
  /**
   * Held for a saved state (core.ts hold()): nothing is written to guest
   * memory; completions are parked in their CQ's pending list (saved with
   * the state) and posted by release().
   */
  held = false;

  constructor(
    private readonly dma: NvmeDma,
    private readonly irq: CqInterrupts,
    /** The shadow doorbells, once configured. */
    private readonly shadow: () => ShadowDoorbells | undefined,
    /** Guest memory failed us: controller fatal status. */
    private readonly fatal: (what: string, err: unknown) => void,
    /** An SQ paused at its in-flight limit got room again (the command engine fetches on). */
    private readonly room: (sq: SubmissionQueue) => void,
  ) {}

  /**
   * Post a completion for a command of `sq`: now, or when the CQ has room.
   * `counted`: the command counts in `sq.inflight` (everything but an Async
   * Event Request). A command of a deleted SQ (Delete I/O SQ aborted it) is
   * posted as Aborted due to SQ Deletion when its CQ has room right now,
   * else dropped; one whose CQ is gone is dropped.
   */
  post(sq: SubmissionQueue, cid: number, status: number, result: number, counted = true): void {
    const cq = sq.cq;
    if (sq.deleted || cq.deleted) {
      if (sq.deleted && !cq.deleted && !this.held && cq.pending.length === 0 && !this.cqFull(cq))
        this.writeCqe(cq, sq.id, sq.head, cid, Status.ABORTED_SQ_DELETION, 0);
      if (counted) this.retire(sq);
      return;
    }
    if (this.held) {
      cq.pending.push({ result, sqhd: sq.head, sq, cid, status, counted });
      return;
    }
    if (cq.pending.length > 0 || this.cqFull(cq)) {
      cq.pending.push({ result, sqhd: sq.head, sq, cid, status, counted });
      if (cq.id !== 0) this.shadow()?.setEventIdx(cqSlot(cq.id), cq.head);
      return;
    }
    this.writeCqe(cq, sq.id, sq.head, cid, status, result);
    if (counted) this.retire(sq);
  }

  /**
   * A command of `sq` is done with, its entry written or dropped: it no
   * longer counts against the SQ. A deleted SQ's last one completes the
   * Delete; an SQ paused at its limit may fetch again.
   */
  retire(sq: SubmissionQueue): void {
    if (--sq.inflight <= 0 && sq.onIdle) {
      const idle = sq.onIdle;
      sq.onIdle = undefined;
      idle();
    }
    if (sq.throttled && !sq.deleted) this.room(sq);
  }

  /** The host moved the head of `cq`: post what was pending while it was full. */
  drainPending(cq: CompletionQueue): void {
    if (this.held) return;
    while (cq.pending.length > 0 && !this.cqFull(cq)) {
      const e = cq.pending.shift();
      this.writeCqe(cq, e.sq.id, e.sqhd, e.cid, e.status, e.result);
      if (e.counted) this.retire(e.sq);
    }
    // Still full: ask for a doorbell on the next head move (the head we know now); drained: none needed.
    if (cq.id !== 0)
      this.shadow()?.setEventIdx(cqSlot(cq.id), cq.pending.length > 0 ? cq.head : (cq.head - 1) & 0xffff);
  }

  private cqFull(cq: CompletionQueue): boolean {
    const next = cq.tail + 1 === cq.size ? 0 : cq.tail + 1;
    if (next !== cq.head) return false;
    if (cq.id !== 0) {
      const head = this.shadow()?.read(cqSlot(cq.id));
      if (head !== undefined && head < cq.size) cq.head = head;
    }
    return next === cq.head;
  }

  private writeCqe(cq: CompletionQueue, sqid: number, sqhd: number, cid: number, status: number, result: number): void {
    const o = cq.tail * CQE_SIZE;
    const dw2 = (sqhd | (sqid << 16)) >>> 0;
    const dw3 = ((cid & 0xffff) | ((cq.phase | (status << 1)) << 16)) >>> 0;
    cq.tail = cq.tail + 1 === cq.size ? 0 : cq.tail + 1;
    if (cq.tail === 0) cq.phase ^= 1;
    cq.completed++;
    let v: DataView | undefined;
    try {
      v = queueView(this.dma, cq, CQE_SIZE, 'readwrite');
    } catch (err) {
      this.fatal(`CQ ${cq.id} at 0x${cq.base.toString(16)} is not in guest memory`, err);
      return;
    }
    if (v) {
      v.setUint32(o, result >>> 0, true);
      v.setUint32(o + 4, 0, true);
      v.setUint32(o + 8, dw2, true);
      v.setUint32(o + 12, dw3, true); // the phase tag goes last
      this.dma.markDirty?.(cq.base + BigInt(o), CQE_SIZE); // a cached view: dirty logging cannot see the write
      this.irq.signal(cq);
      return;
    }
    const bytes = new Uint8Array(CQE_SIZE);
    const m = new DataView(bytes.buffer);
    m.setUint32(0, result >>> 0, true);
    m.setUint32(8, dw2, true);
    m.setUint32(12, dw3, true);
    // By message: interrupt only once the entry is in guest memory.
    this.dma.write(cq.base + BigInt(o), bytes).then(
      () => this.irq.signal(cq),
      (err: unknown) => this.fatal(`writing CQ ${cq.id} entry failed`, err),
    );
  }
}
