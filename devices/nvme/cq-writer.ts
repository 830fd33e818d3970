/**
 * Posting completions: a 16-byte entry in the CQ's guest memory (the phase
 * tag written last), then the CQ's interrupt (cq-interrupts.ts). A full CQ
 * keeps completions pending, in order, until the host moves the head (the
 * CQ head doorbell, or with shadow doorbells the shadow head, read when the
 * CQ looks full).
 */
import { CQE_SIZE } from './constants.js';
import type { CqInterrupts } from './cq-interrupts.js';
import type { NvmeDma } from './host.js';
import { queueView, type Completion, type CompletionQueue, type SubmissionQueue } from './queues.js';
import { cqSlot, type ShadowDoorbells } from './shadow-doorbells.js';

export class CqWriter {
  constructor(
    private readonly dma: NvmeDma,
    private readonly irq: CqInterrupts,
    /** The shadow doorbells, once configured. */
    private readonly shadow: () => ShadowDoorbells | undefined,
    /** Guest memory failed us: controller fatal status. */
    private readonly fatal: (what: string, err: unknown) => void,
  ) {}

  /** Post a completion for a command of `sq` (dropped when its CQ was deleted). */
  post(sq: SubmissionQueue, cid: number, status: number, result: number): void {
    if (sq.cq.deleted) return;
    const cq = sq.cq;
    const entry: Completion = { result, sqhd: sq.head, sqid: sq.id, cid, status };
    if (cq.pending.length > 0 || this.cqFull(cq)) {
      cq.pending.push(entry);
      if (cq.id !== 0) this.shadow()?.setEventIdx(cqSlot(cq.id), cq.head);
      return;
    }
    this.writeCqe(cq, entry);
  }

  /** The host moved the head of `cq`: post what was pending while it was full. */
  drainPending(cq: CompletionQueue): void {
    while (cq.pending.length > 0 && !this.cqFull(cq)) this.writeCqe(cq, cq.pending.shift()!);
    if (cq.pending.length === 0 && cq.id !== 0) this.shadow()?.setEventIdx(cqSlot(cq.id), (cq.head - 1) & 0xffff);
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

  private writeCqe(cq: CompletionQueue, e: Completion): void {
    const o = cq.tail * CQE_SIZE;
    const dw2 = (e.sqhd | (e.sqid << 16)) >>> 0;
    const dw3 = ((e.cid & 0xffff) | ((cq.phase | (e.status << 1)) << 16)) >>> 0;
    cq.tail = cq.tail + 1 === cq.size ? 0 : cq.tail + 1;
    if (cq.tail === 0) cq.phase ^= 1;
    cq.completed++;
    let v: DataView | undefined;
    try {
      v = queueView(this.dma, cq, CQE_SIZE);
    } catch (err) {
      this.fatal(`CQ ${cq.id} at 0x${cq.base.toString(16)} is not in guest memory`, err);
      return;
    }
    if (v) {
      v.setUint32(o, e.result >>> 0, true);
      v.setUint32(o + 4, 0, true);
      v.setUint32(o + 8, dw2, true);
      v.setUint32(o + 12, dw3, true); // the phase tag goes last
      this.irq.signal(cq);
      return;
    }
    const bytes = new Uint8Array(CQE_SIZE);
    const m = new DataView(bytes.buffer);
    m.setUint32(0, e.result >>> 0, true);
    m.setUint32(8, dw2, true);
    m.setUint32(12, dw3, true);
    // By message: interrupt only once the entry is in guest memory.
    this.dma.write(cq.base + BigInt(o), bytes).then(
      () => this.irq.signal(cq),
      (err: unknown) => this.fatal(`writing CQ ${cq.id} entry failed`, err),
    );
  }
}
