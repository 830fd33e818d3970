/**
 * Submission/completion queue state and the 64-byte command layout.
 * Queues live in guest memory (physically contiguous: CAP.CQR = 1).
 */
import type { DmaAccess, NvmeDma } from './host.js';

/** A parsed submission queue entry (copied out of guest memory). */
export interface SubmissionEntry {
  opcode: number;
  /** FUSE bits (9:8 of CDW0). */
  fuse: number;
  /** PSDT (15:14): 0 = PRPs. */
  psdt: number;
  cid: number;
  nsid: number;
  prp1: bigint;
  prp2: bigint;
  cdw10: number;
  cdw11: number;
  cdw12: number;
  cdw13: number;
  cdw14: number;
  cdw15: number;
}

/** Parse the 64-byte entry at `offset` of `v`. */
export function parseSubmissionEntry(v: DataView, offset: number): SubmissionEntry {
  const dw0 = v.getUint32(offset, true);
  return {
    opcode: dw0 & 0xff,
    fuse: (dw0 >>> 8) & 3,
    psdt: (dw0 >>> 14) & 3,
    cid: dw0 >>> 16,
    nsid: v.getUint32(offset + 4, true),
    prp1: v.getBigUint64(offset + 24, true),
    prp2: v.getBigUint64(offset + 32, true),
    cdw10: v.getUint32(offset + 40, true),
    cdw11: v.getUint32(offset + 44, true),
    cdw12: v.getUint32(offset + 48, true),
    cdw13: v.getUint32(offset + 52, true),
    cdw14: v.getUint32(offset + 56, true),
    cdw15: v.getUint32(offset + 60, true),
  };
}

/** What a command handler answers: a 15-bit status and Dword 0. */
export interface CommandResult {
  status: number;
  result?: number;
}

/** A completion waiting for room in its CQ. */
export interface Completion {
  result: number;
  sqhd: number;
  /** The SQ of the command (its id goes in the entry; its accounting ends when the entry is written). */
  sq: SubmissionQueue;
  cid: number;
  status: number;
  /** Counted in `sq.inflight` (an Async Event Request is not: it waits for an event, not for the guest). */
  counted: boolean;
}

/**
 * Completions waiting for room in a CQ, oldest first: a FIFO that takes
 * and gives in O(1) (an array with a read index, compacted as it drains),
 * so a guest that frees one CQ slot at a time behind thousands of waiting
 * completions costs constant work per slot.
 */
export class CompletionFifo {
  private items: Completion[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(c: Completion): void {
    this.items.push(c);
  }

  /** The oldest completion (the caller checked length > 0). */
  shift(): Completion {
    const c = this.items[this.head++]!;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return c;
  }

  /** Remove (and return) every completion of `sq`, keeping the order of the rest. */
  takeAll(sq: SubmissionQueue): Completion[] {
    const taken: Completion[] = [];
    const kept: Completion[] = [];
    for (let i = this.head; i < this.items.length; i++) {
      const c = this.items[i]!;
      (c.sq === sq ? taken : kept).push(c);
    }
    this.items = kept;
    this.head = 0;
    return taken;
  }

  /** Every completion, oldest first (tests, state enumeration). */
  toArray(): Completion[] {
    return this.items.slice(this.head);
  }
}

export interface CompletionQueue {
  id: number;
  base: bigint;
  size: number;
  /** Next slot we write. */
  tail: number;
  /** Last head the host reported. */
  head: number;
  /** Phase tag of the entries we write now. */
  phase: number;
  /** Interrupts enabled (IEN). */
  ien: boolean;
  /** Interrupt vector (MSI-X). */
  iv: number;
  /** SQs bound to this CQ. */
  sqCount: number;
  /**
   * Completions that found the CQ full, in order. At most the sum of its
   * SQs' sizes: an SQ stops fetching while `inflight` reaches its size.
   */
  pending: CompletionFifo;
  /** Completions posted since the last interrupt (coalescing). */
  unsignalled: number;
  /** An interrupt is queued for the end of this event-loop turn. */
  irqQueued: boolean;
  /** Cached view of the whole queue (fd-backed memory); dropped when its mapping goes (access throws). */
  dv: DataView | undefined;
  /** Interrupt coalescing: the timer that fires the held-back interrupt. */
  coalesceTimer: NodeJS.Timeout | undefined;
  deleted: boolean;
  /** Commands completed on this CQ (statistics). */
  completed: number;
}

export interface SubmissionQueue {
  id: number;
  base: bigint;
  size: number;
  cq: CompletionQueue;
  /** Next entry we fetch. */
  head: number;
  /** Last tail the host reported. */
  tail: number;
  /** A fetch loop is running. */
  fetching: boolean;
  /**
   * Commands fetched whose completion entry is not written yet (running, or
   * waiting for room in the CQ). Fetching stops while it equals `size`
   * (QEMU: one request per SQ slot, returned when its CQE is written), so a
   * guest that never drains its CQ gets at most `size` commands run.
   */
  inflight: number;
  /** Fetching paused because `inflight` reached `size`; resumed when an entry of this SQ is written. */
  throttled: boolean;
  /** Delete I/O SQ: the queue left the table; its commands still running are aborted. */
  deleted: boolean;
  /** Commands fetched from this SQ (statistics: per-queue I/O counts). */
  fetched: number;
  /** Called once when `inflight` drops to 0 after a Delete I/O SQ (the Delete completes then). */
  onIdle: (() => void) | undefined;
  /** Cached view of the whole queue (fd-backed memory); dropped when its mapping goes (access throws). */
  dv: DataView | undefined;
  /** The SQ poller watches its shadow tail (EventIdx says "do not ring"). */
  polled?: boolean;
}

/**
 * A view of the whole queue when it lies in fd-backed memory (cached; a
 * cached view whose mapping went away throws on access and is replaced).
 * Undefined: use DMA messages. SQs are read ('read'), CQs written ('readwrite').
 */
export function queueView(
  dma: NvmeDma,
  q: SubmissionQueue | CompletionQueue,
  entrySize: number,
  access: DmaAccess,
): DataView | undefined {
  if (q.dv) {
    try {
      q.dv.getUint8(0);
      return q.dv;
    } catch {
      q.dv = undefined;
    }
  }
  const view = dma.view(q.base, q.size * entrySize, access);
  if (view) q.dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
  return q.dv;
}
