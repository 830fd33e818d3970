/**
 * The controller's submission and completion queues, indexed by queue id:
 * created by CC.EN (admin, qid 0) and Create I/O SQ/CQ, deleted by Delete
 * I/O SQ/CQ and, all at once, by a controller reset. Admin commands see it
 * as QueueAdmin (context.ts); the command engine reads the tables.
 */
import type { QueueAdmin } from './context.js';
import { CompletionFifo, type CompletionQueue, type SubmissionQueue } from './queues.js';
import { cqSlot, sqSlot, type ShadowDoorbells } from './shadow-doorbells.js';

export class QueueTable implements QueueAdmin {
  private readonly sqTable: (SubmissionQueue | undefined)[] = [];
  private readonly cqTable: (CompletionQueue | undefined)[] = [];
  /** An I/O queue was created since the last reset (Set Features Number of Queues is then a Command Sequence Error). */
  ioQueuesCreated = false;

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
      pending: new CompletionFifo(),
      unsignalled: 0,
      irqQueued: false,
      dv: undefined,
      coalesceTimer: undefined,
      deleted: false,
      completed: 0,
    };
    this.cqTable[id] = cq;
    if (id !== 0) {
      this.ioQueuesCreated = true;
      this.shadow()?.setEventIdx(cqSlot(id), 0xffff);
    }
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
      throttled: false,
      deleted: false,
      fetched: 0,
      onIdle: undefined,
      dv: undefined,
    };
    cq.sqCount++;
    this.sqTable[id] = sq;
    if (id !== 0) {
      this.ioQueuesCreated = true;
      this.shadow()?.setEventIdx(sqSlot(id), 0);
    }
    return sq;
  }

  /**
   * Delete I/O SQ. The queue goes at once, as in QEMU (a second Delete of
   * the qid finds nothing: Invalid Queue Identifier; its CQ may be deleted
   * next): fetching stops, completions of its commands still waiting for CQ
   * room are dropped (QEMU drops them too; posted after the Delete they
   * would name a queue that no longer exists), and commands still running
   * are aborted (cq-writer.ts posts them as Aborted due to SQ Deletion if
   * their CQ has room when they finish, else nothing). Resolves when none
   * is running: what they wait for is the host's file I/O or a DMA message
   * (both time-bounded), never the guest; a controller reset drops the
   * Delete's own completion like any other.
   */
  deleteSq(sq: SubmissionQueue): Promise<void> {
    sq.deleted = true;
    if (this.sqTable[sq.id] === sq) this.sqTable[sq.id] = undefined;
    sq.cq.sqCount--;
    sq.inflight -= sq.cq.pending.takeAll(sq).filter((c) => c.counted).length;
    if (sq.inflight <= 0) return Promise.resolve();
    return new Promise<void>((resolve) => (sq.onIdle = resolve));
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
    this.ioQueuesCreated = false;
  }

  /** Forget the cached views of every queue (bus mastering went off: the next access goes through the DMA space, which refuses it). */
  dropViews(): void {
    for (const sq of this.sqTable) if (sq) sq.dv = undefined;
    for (const cq of this.cqTable) if (cq) cq.dv = undefined;
  }
}
