/**
 * BAR0's controller registers (CAP, VS, INTMS/INTMC, CC, CSTS, AQA, ASQ,
 * ACQ; the doorbells from 0x1000 belong to the command engine) and the
 * CC/CSTS state machine: CC.EN 0 -> 1 enables the controller, CC.EN 1 -> 0
 * resets it, CC.SHN shuts it down, and a PCI-level reset also clears the
 * registers. What enabling and resetting do to the rest of the controller
 * (queues, commands, events, features) is ControllerLifecycle's part
 * (core.ts).
 *
 * A reset always completes, and within `drainMs` (issue 13): it drops every
 * queue at once, then waits for the commands still running only for work
 * the host bounds (file I/O, DMA messages), at most `drainMs`, never for
 * the guest (CQ space, other admin commands). A reset whose commands are
 * still running after `drainMs` is done without them: RDY clears with
 * Controller Fatal Status set and a (rate-limited) log line, so a stuck
 * host shows instead of hanging the guest; the next CC.EN 0 -> 1 clears CFS.
 * A reset asked for while one runs starts over from now (newest wins), so
 * a guest toggling CC.EN cannot queue up resets. A shutdown (CC.SHN) waits
 * the same way for running commands and the flush, then reports SHST
 * complete (with CFS if the bound ran out).
 */
import type { LogLimiter } from 'vfio-user-ts';
import { CC, CSTS, MAX_QUEUE_ENTRIES, NVME_VERSION, Reg } from './constants.js';
import type { CqInterrupts } from './cq-interrupts.js';

/** CAP: MQES 1023, CQR, TO 7.5 s, DSTRD 0, CSS NVM, MPSMIN/MPSMAX 4 KiB. */
const CAP = BigInt(MAX_QUEUE_ENTRIES - 1) | (1n << 16n) | (15n << 24n) | (1n << 37n);

/** What the register state machine asks of the rest of the controller. */
export interface ControllerLifecycle {
  /** CC.EN 0 -> 1 with valid settings: create the admin queues. */
  createAdminQueues(asq: bigint, asqs: number, acq: bigint, acqs: number): void;
  /**
   * A reset begins: every queue, event and setting the guest made goes at
   * once (completions of commands still in flight are dropped); `full` (a
   * PCI-level reset) also clears INTMS.
   */
  beginReset(full: boolean): void;
  /** Resolves when no command is running. */
  quiesce(): Promise<void>;
  /** Make every namespace's completed writes durable. */
  flush(): Promise<void>;
  /** The reset is done (commands finished or given up on): features back to defaults. */
  endReset(): void;
}

/** `promise` settled within `ms`: true, else false (the promise runs on). */
function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    promise.then(
      () => {
        clearTimeout(timer);
        resolve(true);
      },
      () => {
        clearTimeout(timer);
        resolve(true);
      },
    );
  });
}

export class ControllerRegisters {
  cc = 0;
  csts = 0;
  aqa = 0;
  asq = 0n;
  acq = 0n;
  /** Admin queues exist and doorbells count: from a valid CC.EN 0 -> 1 until a reset begins. */
  private running = false;
  /** Bumped by every reset: a reset or shutdown begun earlier is stale when it finishes waiting. */
  private epoch = 0;
  /** The reset in progress (RDY stays set until it is done); undefined when none. */
  private resetting: Promise<void> | undefined;
  /** A PCI-level reset is among the resets in progress: the one that ends clears the registers too. */
  private fullPending = false;
  /** The shutdown in progress (SHST processing); undefined when none. */
  private shuttingDown: Promise<void> | undefined;

  constructor(
    private readonly lifecycle: ControllerLifecycle,
    /** INTMS/INTMC live with the interrupts they mask. */
    private readonly irq: CqInterrupts,
    /** Lines a guest can trigger (CC writes, fatal status): rate-limited. */
    private readonly limiter: LogLimiter,
    /** How long a reset or shutdown waits for running commands (NvmeControllerOptions.resetTimeoutMs). */
    private readonly drainMs: number,
  ) {}

  /** The controller is enabled (CSTS.RDY set by CC.EN, until a reset begins). */
  get enabled(): boolean {
    return this.running;
  }

  /** A 4-byte (or smaller) register read at `offset` in BAR0. */
  read(offset: number, size: 1 | 2 | 4): number {
    const aligned = offset & ~3;
    const dword = this.readDword(aligned);
    const shift = (offset & 3) * 8;
    const mask = size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
    return ((dword >>> shift) & mask) >>> 0;
  }

  private readDword(offset: number): number {
    switch (offset) {
      case Reg.CAP:
        return Number(CAP & 0xffffffffn);
      case Reg.CAP + 4:
        return Number(CAP >> 32n);
      case Reg.VS:
        return NVME_VERSION;
      case Reg.INTMS:
      case Reg.INTMC:
        return this.irq.mask;
      case Reg.CC:
        return this.cc;
      case Reg.CSTS:
        return this.csts;
      case Reg.AQA:
        return this.aqa;
      case Reg.ASQ:
        return Number(this.asq & 0xffffffffn);
      case Reg.ASQ + 4:
        return Number(this.asq >> 32n);
      case Reg.ACQ:
        return Number(this.acq & 0xffffffffn);
      case Reg.ACQ + 4:
        return Number(this.acq >> 32n);
      default:
        return 0; // reserved, CMB, doorbells (write-only: read as 0)
    }
  }

  /** A register write at `offset` in BAR0, below the doorbells. */
  write(offset: number, size: 1 | 2 | 4, value: number): void {
    let dword = value >>> 0;
    if (size !== 4) {
      const aligned = offset & ~3;
      const shift = (offset & 3) * 8;
      const mask = (((1 << (size * 8)) - 1) << shift) >>> 0;
      dword = ((this.readDword(aligned) & ~mask) | ((value << shift) & mask)) >>> 0;
      offset = aligned;
    }
    switch (offset) {
      case Reg.INTMS:
        this.irq.setMask(dword);
        break;
      case Reg.INTMC:
        this.irq.clearMask(dword);
        break;
      case Reg.CC:
        this.writeCc(dword);
        break;
      case Reg.AQA:
        if (!this.running) this.aqa = dword & 0x0fff0fff;
        break;
      case Reg.ASQ:
        if (!this.running) this.asq = (this.asq & ~0xffffffffn) | BigInt((dword & ~0xfff) >>> 0);
        break;
      case Reg.ASQ + 4:
        if (!this.running) this.asq = (this.asq & 0xffffffffn) | (BigInt(dword) << 32n);
        break;
      case Reg.ACQ:
        if (!this.running) this.acq = (this.acq & ~0xffffffffn) | BigInt((dword & ~0xfff) >>> 0);
        break;
      case Reg.ACQ + 4:
        if (!this.running) this.acq = (this.acq & 0xffffffffn) | (BigInt(dword) << 32n);
        break;
      default:
        break; // read-only or reserved: ignored
    }
  }

  private writeCc(value: number): void {
    const old = this.cc;
    this.cc = value;
    const wasEn = (old & CC.EN) !== 0;
    const en = (value & CC.EN) !== 0;
    const shn = (value >>> CC.SHN_SHIFT) & 3;
    const oldShn = (old >>> CC.SHN_SHIFT) & 3;
    if (wasEn && !en) {
      this.limiter.debug('cc-reset', {}, 'nvme: CC.EN 1 -> 0: controller reset');
      void this.startReset(false);
    } else if (!wasEn && en && !this.resetting) {
      this.enable(); // while a reset runs, its end enables (CC.EN is looked at again then)
    }
    if (shn !== 0 && oldShn === 0) {
      this.limiter.debug('shutdown', { shn }, 'nvme: shutdown requested');
      this.csts = (this.csts & ~(3 << CSTS.SHST_SHIFT)) | (CSTS.SHST_PROCESSING << CSTS.SHST_SHIFT);
      const done = this.shutdown(this.epoch).finally(() => {
        if (this.shuttingDown === done) this.shuttingDown = undefined;
      });
      this.shuttingDown = done;
    } else if (shn === 0 && oldShn !== 0) {
      this.csts &= ~(3 << CSTS.SHST_SHIFT);
    }
  }

  /**
   * Shutdown: wait (at most drainMs) for running commands and the flush,
   * then SHST complete, with CFS when the bound ran out. A reset begun
   * meanwhile, or SHN cleared, makes it moot.
   */
  private async shutdown(epoch: number): Promise<void> {
    const done = await settlesWithin(
      this.lifecycle.quiesce().then(() => this.lifecycle.flush()),
      this.drainMs,
    );
    if (epoch !== this.epoch || ((this.cc >>> CC.SHN_SHIFT) & 3) === 0) return;
    if (!done) {
      this.limiter.error(
        'shutdown-timeout',
        { ms: this.drainMs },
        'nvme: shutdown: commands or the flush still running after the bound: controller fatal status',
      );
      this.csts |= CSTS.CFS;
    }
    this.csts = (this.csts & ~(3 << CSTS.SHST_SHIFT)) | (CSTS.SHST_COMPLETE << CSTS.SHST_SHIFT);
    this.limiter.debug('shutdown', {}, 'nvme: shutdown complete');
  }

  private enable(): void {
    if ((this.cc & CC.EN) === 0 || this.running) return; // disabled again meanwhile
    const mps = (this.cc >>> CC.MPS_SHIFT) & 0xf;
    const css = (this.cc >>> CC.CSS_SHIFT) & 7;
    const iosqes = (this.cc >>> CC.IOSQES_SHIFT) & 0xf;
    const iocqes = (this.cc >>> CC.IOCQES_SHIFT) & 0xf;
    const asqs = (this.aqa & 0xfff) + 1;
    const acqs = ((this.aqa >>> 16) & 0xfff) + 1;
    const problems: string[] = [];
    if (mps !== 0) problems.push(`CC.MPS ${mps} (only 4 KiB pages)`);
    if (css !== 0) problems.push(`CC.CSS ${css}`);
    if (iosqes !== 6 || iocqes !== 4) problems.push(`CC.IOSQES/IOCQES ${iosqes}/${iocqes}`);
    if (asqs < 2 || acqs < 2) problems.push(`AQA ${this.aqa.toString(16)}`);
    if (this.asq === 0n || this.acq === 0n) problems.push('ASQ/ACQ unset');
    if (problems.length > 0) {
      this.limiter.warn('enable-refused', { problems }, 'nvme: cannot enable: controller fatal status');
      this.csts |= CSTS.CFS;
      return;
    }
    this.lifecycle.createAdminQueues(this.asq, asqs, this.acq, acqs);
    this.running = true;
    this.csts = (this.csts & ~CSTS.CFS) | CSTS.RDY;
    this.limiter.debug('enabled', { asqs, acqs }, 'nvme: controller enabled');
  }

  /**
   * Controller reset (CC.EN 1 -> 0, or a PCI-level reset when `full`): drop
   * every queue now, wait at most drainMs for running commands, then clear
   * RDY (CFS if they are still running). `full` also resets the registers.
   * The namespaces are flushed in the background (a later Flush command
   * waits for that flush). A newer reset takes over an older one's ending.
   */
  private startReset(full: boolean): Promise<void> {
    this.running = false;
    const epoch = ++this.epoch;
    if (full) this.fullPending = true;
    this.lifecycle.beginReset(full);
    const run = settlesWithin(this.lifecycle.quiesce(), this.drainMs).then((drained) => {
      if (epoch !== this.epoch) return; // a newer reset ends this one
      this.resetting = undefined;
      this.lifecycle.endReset();
      this.lifecycle
        .flush()
        .catch((err: unknown) =>
          this.limiter.error('reset-flush', { err }, 'nvme: flushing the namespaces after a reset failed'),
        );
      if (!drained)
        this.limiter.error(
          'reset-timeout',
          { ms: this.drainMs },
          'nvme: reset: commands still running after the bound (stuck host I/O or unanswered DMA): done without them, controller fatal status',
        );
      this.csts = drained ? 0 : CSTS.CFS;
      if (this.fullPending) {
        this.fullPending = false;
        this.cc = 0;
        this.aqa = 0;
        this.asq = 0n;
        this.acq = 0n;
      } else if ((this.cc & CC.EN) !== 0) {
        // Re-enabled while we were resetting.
        this.enable();
      }
    });
    this.resetting = run;
    return run;
  }

  /** PCI-level reset (DEVICE_RESET, FLR, lost connection): a full controller reset, done within drainMs. */
  reset(): Promise<void> {
    this.cc = 0;
    return this.startReset(true).then(() => this.resetting); // superseded: wait for the newer one
  }

  /**
   * Resolves when no reset and no shutdown is in progress (each is bounded
   * by drainMs): a saved state never catches the registers halfway.
   */
  async settled(): Promise<void> {
    while (this.resetting ?? this.shuttingDown) await (this.resetting ?? this.shuttingDown);
  }

  /** The registers a saved state holds (INTMS lives with the interrupts). */
  save(): { cc: number; csts: number; aqa: number; asq: bigint; acq: bigint } {
    return { cc: this.cc, csts: this.csts, aqa: this.aqa, asq: this.asq, acq: this.acq };
  }

  /**
   * A loaded state (checked by state.ts, the admin queues created by the
   * caller): enabled when CC.EN and CSTS.RDY are both set. Any reset or
   * shutdown in progress here is forgotten.
   */
  restore(r: { cc: number; csts: number; aqa: number; asq: bigint; acq: bigint }): void {
    this.epoch++;
    this.resetting = undefined;
    this.shuttingDown = undefined;
    this.fullPending = false;
    this.cc = r.cc;
    this.csts = r.csts;
    this.aqa = r.aqa;
    this.asq = r.asq;
    this.acq = r.acq;
    this.running = (r.cc & CC.EN) !== 0 && (r.csts & CSTS.RDY) !== 0;
  }

  /** Something the guest set up cannot work (e.g. a queue outside its memory): Controller Fatal Status. */
  fatal(what: string, err: unknown): void {
    this.limiter.error('fatal', { err, what }, `nvme: ${what}: controller fatal status`);
    this.csts |= CSTS.CFS;
  }
}
