/**
 * The controller's submission and completion queues, indexed by queue id:
 * created by CC.EN (admin, qid 0) and Create I/O SQ/CQ, deleted by Delete
 * I/O SQ/CQ and, all at once, by a controller reset. Admin commands see it
 * as QueueAdmin (context.ts); the command engine reads the tables.
 */
import type { QueueAdmin } from './context.js';
import type { CompletionQueue, SubmissionQueue } from './queues.js';
import { cqSlot, sqSlot, type ShadowDoorbells } from './shadow-doorbells.js';

export class QueueTable implements QueueAdmin {
  private readonly sqTable: (SubmissionQueue | undefined)[] = [];
  private readonly cqTable: (CompletionQueue | undefined)[] = [];

  /** `shadow`: the shadow doorbells, once configured (a new I/O queue publishes its EventIdx there). */
  constructor(private readonly shadow: () => ShadowDoorbells | undefined) {}

  /** Every SQ by qid (holes where none exists). */
  get submissionQueues(): readonly (SubmissionQueue | undefined)[] {
    return this.sqTable;
  }

  /** Every CQ by qid (holes where none exists). */
  get completionQueues(): readonly (CompletionQueue | undefined)[] {
    return this.cqTable;
  }

  sq(qid: number): SubmissionQueue | undefined {
    return this.sqTable[qid];
  }

  cq(qid: number): CompletionQueue | undefined {
    return this.cqTable[qid];
  }

  createCq(id: number, base: bigint, size: number, iv: number, ien: boolean): CompletionQueue {
    const cq: CompletionQueue = {
      id,
      base,
      size,
      tail: 0,
      head: 0,
      phase: 1,
      ien,
      iv,
      sqCount: 0,
      pending: [],
      unsignalled: 0,
      irqQueued: false,
      dv: undefined,
      coalesceTimer: undefined,
      deleted: false,
      completed: 0,
    };
    this.cqTable[id] = cq;
    if (id !== 0) this.shadow()?.setEventIdx(cqSlot(id), 0xffff);
    return cq;
  }

  createSq(id: number, base: bigint, size: number, cq: CompletionQueue): SubmissionQueue {
    const sq: SubmissionQueue = {
      id,
      base,
      size,
      cq,
      head: 0,
      tail: 0,
      fetching: false,
      inflight: 0,
      deleted: false,
      fetched: 0,
      onIdle: undefined,
      dv: undefined,
    };
    cq.sqCount++;
    this.sqTable[id] = sq;
    if (id !== 0) this.shadow()?.setEventIdx(sqSlot(id), 0);
    return sq;
  }

  /** Delete an I/O SQ once its in-flight commands completed. */
  async deleteSq(sq: SubmissionQueue): Promise<void> {
    sq.deleted = true;
    if (sq.inflight > 0) await new Promise<void>((resolve) => (sq.onIdle = resolve));
    if (this.sqTable[sq.id] === sq) this.sqTable[sq.id] = undefined;
    sq.cq.sqCount--;
  }

  deleteCq(cq: CompletionQueue): void {
    cq.deleted = true;
    if (cq.coalesceTimer) clearTimeout(cq.coalesceTimer);
    if (this.cqTable[cq.id] === cq) this.cqTable[cq.id] = undefined;
  }

  /**
   * Controller reset: every queue is deleted at once, without waiting (the
   * completions of their in-flight commands are dropped).
   */
  deleteAll(): void {
    for (const cq of this.cqTable) if (cq?.coalesceTimer) clearTimeout(cq.coalesceTimer);
    for (const sq of this.sqTable) if (sq) sq.deleted = true;
    for (const cq of this.cqTable) if (cq) cq.deleted = true;
    this.sqTable.length = 0;
    this.cqTable.length = 0;
  }
}
