/**
 * Completion queue interrupts: one interrupt per CQ for everything posted
 * in one turn of the event loop (a microtask flushes them), the Interrupt
 * Coalescing feature (threshold and time, per-vector disable), and INTx/MSI
 * masking through INTMS/INTMC (a masked interrupt is remembered and raised
 * on unmask). MSI-X vectors are masked by QEMU, not here.
 */
import type { LogLimiter } from 'vfio-user-ts';
import type { NvmeHost } from './host.js';
import type { CompletionQueue } from './queues.js';

/** The coalescing settings of Set Features 08h/09h (read on every completion). */
export interface CoalescingSettings {
  /** Aggregation threshold, 0-based (0: no coalescing by count). */
  coalesceThreshold: number;
  /** Aggregation time in 100 us units (0: no timer). */
  coalesceTime: number;
  /** Vectors with coalescing disabled (Interrupt Vector Configuration CD). */
  coalesceDisabled: Set<number>;
}

export class CqInterrupts {
  /** INTMS: interrupt mask for INTx/MSI (bit 0 is the single vector we use). */
  mask = 0;
  /** An INTx/MSI interrupt came while masked. */
  private maskedPending = false;
  private scheduled = false;
  private queue: CompletionQueue[] = [];
  /** The other half of the queue double buffer (no array allocated per interrupt). */
  private spare: CompletionQueue[] = [];
  private readonly flush = (): void => {
    this.scheduled = false;
    const queues = this.queue;
    this.queue = this.spare;
    for (let i = 0; i < queues.length; i++) this.fire(queues[i]!);
    queues.length = 0;
    this.spare = queues;
  };

  constructor(
    private readonly host: NvmeHost,
    private readonly settings: () => CoalescingSettings,
    /** Failures the guest's interrupt setup can cause: rate-limited. */
    private readonly log: LogLimiter,
  ) {}

  /** INTMS write: set mask bits. */
  setMask(bits: number): void {
    this.mask = (this.mask | bits) >>> 0;
  }

  /** INTMC write: clear mask bits, and raise what came while masked. */
  clearMask(bits: number): void {
    this.mask = (this.mask & ~bits) >>> 0;
    if ((this.mask & 1) === 0 && this.maskedPending) {
      this.maskedPending = false;
      this.host.interrupt(0);
    }
  }

  /** An INTx/MSI interrupt came while INTMS masked it (raised by the INTMC that unmasks it). Saved state. */
  get pendingWhileMasked(): boolean {
    return this.maskedPending;
  }

  /** A loaded state: INTMS and whether an interrupt waits for its unmask. */
  restore(mask: number, pendingWhileMasked: boolean): void {
    this.mask = mask >>> 0;
    this.maskedPending = pendingWhileMasked;
  }

  /**
   * Raise now every interrupt held back (queued for the end of this turn,
   * or waiting for its coalescing threshold or timer): before a saved state,
   * which keeps no timers. A CQ with completions nobody was told about is
   * signalled (the library holds the interrupt pending while the device is
   * stopped).
   */
  fireAll(cqs: readonly (CompletionQueue | undefined)[]): void {
    for (const cq of cqs) if (cq && (cq.unsignalled > 0 || cq.irqQueued || cq.coalesceTimer)) this.fire(cq);
  }

  /** Controller reset: forget pending state; `full` also clears INTMS. */
  reset(full: boolean): void {
    this.maskedPending = false;
    if (full) this.mask = 0;
  }

  /** A completion was posted on `cq`: interrupt now (end of this turn), or when coalescing says so. */
  signal(cq: CompletionQueue): void {
    if (!cq.ien || cq.deleted) return;
    cq.unsignalled++;
    const f = this.settings();
    if (cq.id !== 0 && (f.coalesceThreshold > 0 || f.coalesceTime > 0) && !f.coalesceDisabled.has(cq.iv)) {
      if (cq.unsignalled <= f.coalesceThreshold) {
        if (!cq.coalesceTimer && f.coalesceTime > 0) {
          cq.coalesceTimer = setTimeout(() => this.fire(cq), Math.max(1, Math.round(f.coalesceTime / 10)));
        }
        return;
      }
    }
    if (cq.irqQueued) return;
    cq.irqQueued = true;
    this.queue.push(cq);
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(this.flush);
    }
  }

  private fire(cq: CompletionQueue): void {
    cq.irqQueued = false;
    if (cq.coalesceTimer) {
      clearTimeout(cq.coalesceTimer);
      cq.coalesceTimer = undefined;
    }
    if (cq.unsignalled === 0 || cq.deleted) return;
    cq.unsignalled = 0;
    try {
      if (this.host.msixEnabled()) {
        this.host.interrupt(cq.iv);
      } else if (this.mask & 1) {
        this.maskedPending = true;
      } else {
        this.host.interrupt(0);
      }
    } catch (err) {
      this.log.error('interrupt-failed', { err, cq: cq.id }, 'nvme: raising an interrupt failed');
    }
  }
}
