/**
 * A device's interrupts (`dev.irq`): the five vfio-user IRQ indexes fed by
 * DEVICE_SET_IRQS, and `trigger(vector)` for the device.
 *
 * Masking and pending, per type:
 * - INTx is level-like and automasked, as with kernel VFIO: a delivered INTx
 *   masks the line until the client UNMASKs it (QEMU does so on the next BAR
 *   access, or when the guest EOIs through a KVM resample eventfd). A trigger
 *   while masked, while the guest set COMMAND.INTX_DISABLE, or with no eventfd
 *   pends and is delivered on unmask.
 * - MSI and MSI-X masking is QEMU's job (it emulates the capability and the
 *   MSI-X table): we signal the vector's latest eventfd whatever the guest's
 *   mask state. A vector pends (and shows in our PBA) only when it has no
 *   eventfd yet (QEMU installs them one by one as the guest unmasks vectors)
 *   or the client masked it with SET_IRQS MASK; it fires when an eventfd
 *   arrives or on UNMASK.
 * - ERR and REQ: one vector each, TRIGGER only.
 * - Bus mastering: an MSI or MSI-X message is a memory write, so while the
 *   guest has cleared Bus Master Enable (PciDevice keeps `busMaster` in step
 *   with the Command register) `trigger()` drops it, as QEMU's PCI core does
 *   (its MSI write goes through the disabled bus-master address space and is
 *   lost; nothing pends). INTx is a wire, not a write: not affected.
 */
import type { Logger } from 'pino';
import { native, type Watcher } from '../../native/index.js';
import { VfioUserError } from '../../protocol/errors.js';
import type { IrqInfo, SetIrqsRequest } from '../endpoint.js';
import { IrqInfoFlag, IrqSetFlag, PciIrq } from '../../protocol/constants.js';
import { LogLimiter } from '../log-limiter.js';
import { closeQuietly, VectorTable } from './vector-table.js';

/** Which index `trigger()` signals: the first enabled of MSI-X, MSI, INTx. */
export type IrqMode = 'none' | 'intx' | 'msi' | 'msix';

/** One IRQ index's state as saved (eventfds are the client's and not part of it). */
export interface IrqIndexState {
  /** The client enabled the index (SET_IRQS EVENTFD|TRIGGER): what `mode` follows. */
  enabled: boolean;
  /** Per vector: masked (SET_IRQS MASK, or INTx automasked after delivery). */
  masked: boolean[];
  /** Per vector: pending (triggered while it could not be delivered). */
  pending: boolean[];
}

/** The interrupt state the library saves with a device (PciDevice.saveState). */
export interface IrqState {
  /** INTx, MSI, MSI-X, ERR, REQ, in that order. */
  indexes: IrqIndexState[];
  /** INTx was delivered and not yet unmasked (the line is up). */
  intxAsserted: boolean;
}

/** Vectors per IRQ index (0 = the device does not have it). */
export interface IrqCounts {
  intx: number;
  msi: number;
  msix: number;
  err: number;
  req: number;
}

export class Interrupts {
  private readonly tables: VectorTable[];
  private resample: { fd: number; watcher: Watcher } | undefined;
  private intxDisabled = false;
  /** INTx was delivered and the client has not unmasked it yet (the line is "asserted"). */
  private intxAsserted = false;
  /** Between freeze() and thaw() (a migration stopped the device): every trigger pends. */
  private frozen = false;
  /** Called when the INTx line's state (delivered-and-unacknowledged or pending) changes: Status.INTERRUPT. */
  onIntxState: ((asserted: boolean) => void) | undefined;
  /** The guest and the client decide how often interrupts pend or fds misbehave: those lines are rate-limited. */
  private readonly limiter: LogLimiter;
  /** Bus Master Enable: MSI/MSI-X messages may be sent (PciDevice sets it from the Command register). */
  busMaster = true;
  /** MSI/MSI-X triggers dropped because bus mastering was off. */
  droppedWithoutBusMaster = 0;
  /** Eventfd signals per IRQ index since the device was created (metrics). */
  readonly #signalled = new Float64Array(5);

  constructor(
    readonly counts: IrqCounts,
    private readonly log: Logger,
  ) {
    this.tables = [counts.intx, counts.msi, counts.msix, counts.err, counts.req].map((n) => new VectorTable(n));
    this.limiter = new LogLimiter(log);
  }

  /** The index `trigger()` currently signals. */
  get mode(): IrqMode {
    if (this.tables[PciIrq.MSIX]!.enabled) return 'msix';
    if (this.tables[PciIrq.MSI]!.enabled) return 'msi';
    if (this.tables[PciIrq.INTX]!.enabled) return 'intx';
    return 'none';
  }

  /**
   * Signal `vector` of the active type (MSI-X > MSI > INTx; under INTx every
   * vector is the one line, as when Linux falls back from MSI-X). Returns true
   * if an eventfd was written now, false if the interrupt pends (masked, no
   * eventfd yet) or no type is enabled, and when an MSI/MSI-X message is
   * dropped because bus mastering is off. Throws RangeError for a vector the
   * active type does not have.
   */
  trigger(vector = 0): boolean {
    switch (this.mode) {
      case 'msix':
        return this.busMaster ? this.fire(PciIrq.MSIX, vector) : this.dropMessage(PciIrq.MSIX, vector);
      case 'msi':
        return this.busMaster ? this.fire(PciIrq.MSI, vector) : this.dropMessage(PciIrq.MSI, vector);
      case 'intx':
        if (!Number.isInteger(vector) || vector < 0) throw new RangeError(`irq: bad vector ${vector}`);
        return this.fire(PciIrq.INTX, 0);
      default:
        this.limiter.debug('irq-none-enabled', { vector }, 'irq trigger with no interrupt type enabled: dropped');
        return false;
    }
  }

  /** Signal the ERR index (AER error notification). */
  triggerErr(): boolean {
    return this.fire(PciIrq.ERR, 0);
  }

  /** Signal the REQ index (ask the client to release the device). */
  triggerReq(): boolean {
    return this.fire(PciIrq.REQ, 0);
  }

  /** Interrupts delivered (an eventfd written) on IRQ `index` since the device was created. */
  signalCount(index: number): number {
    return this.#signalled[index] ?? 0;
  }

  /** Whether `vector` of IRQ `index` is pending (MSI-X: the PBA bit). */
  isPending(index: number, vector: number): boolean {
    const t = this.tables[index];
    return t !== undefined && vector >= 0 && vector < t.count && t.isPending(vector);
  }

  /** Whether the client installed an eventfd for `vector` of `index`. */
  hasEventfd(index: number, vector: number): boolean {
    return this.tables[index]?.fd(vector) !== undefined;
  }

  /** COMMAND.INTX_DISABLE from config space: while set, INTx pends instead of firing. */
  setIntxDisabled(disabled: boolean): void {
    if (this.intxDisabled === disabled) return;
    this.intxDisabled = disabled;
    if (!disabled) this.deliverPending(PciIrq.INTX, 0);
    this.updateIntxState();
  }

  /** DEVICE_GET_IRQ_INFO for one index (flags as kernel VFIO reports them). */
  info(index: number): IrqInfo {
    const t = this.tables[index];
    if (!t) throw VfioUserError.invalid(`no IRQ index ${index}`);
    let flags = IrqInfoFlag.EVENTFD;
    if (index === PciIrq.INTX) flags |= IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED;
    else if (index !== PciIrq.MSIX) flags |= IrqInfoFlag.NORESIZE;
    return { flags, count: t.count };
  }

  /**
   * Apply a validated DEVICE_SET_IRQS. Takes ownership of `fds`: stored ones
   * replace (and close) older ones, all others are closed before returning or throwing.
   */
  set(req: SetIrqsRequest, fds: number[]): void {
    const owned = [...fds];
    try {
      this.apply(req, owned);
    } finally {
      for (const fd of owned) if (fd >= 0) closeQuietly(fd);
    }
  }

  /** Close every eventfd (client gone). */
  closeAll(): void {
    for (const t of this.tables) t.clear();
    this.dropResample();
    this.intxAsserted = false;
    this.updateIntxState();
  }

  /**
   * Swap the client's eventfds (every vector's, and INTx's resample fd) with
   * `other`'s: a device reload hands them to the new generation (and the
   * empty ones to the old, which is then closed). Mask, pending and enabled
   * state are not touched (they travel in the saved state). Throws if the
   * vector counts differ.
   */
  exchangeEventfds(other: Interrupts): void {
    const counts = (i: Interrupts): string => JSON.stringify(i.counts);
    if (counts(this) !== counts(other))
      throw new Error(`irq: cannot hand eventfds over between ${counts(this)} and ${counts(other)} vectors`);
    this.tables.forEach((t, index) => t.exchangeFds(other.tables[index]!));
    const mine = this.resample;
    const theirs = other.resample;
    mine?.watcher.close();
    theirs?.watcher.close();
    this.resample = undefined;
    other.resample = undefined;
    if (theirs) this.watchResample(theirs.fd);
    if (mine) other.watchResample(mine.fd);
  }

  /** Device reset: forget mask and pending state (eventfds stay, as in libvfio-user). */
  resetState(): void {
    for (const t of this.tables) t.clearState();
    this.intxDisabled = false;
    this.intxAsserted = false;
    this.updateIntxState();
  }

  /**
   * Migration stopped the device: until thaw(), nothing is signalled. A
   * trigger (from the device, a loopback SET_IRQS, an UNMASK or a new eventfd
   * delivering what pended) sets the vector's pending bit instead, so the
   * saved state has it and it fires after the resume.
   */
  freeze(): void {
    this.frozen = true;
  }

  /** Signal what pended while frozen, where an eventfd and the masks allow it now. */
  thaw(): void {
    if (!this.frozen) return;
    this.frozen = false;
    this.tables.forEach((t, index) => {
      for (let v = 0; v < t.count; v++) this.deliverPending(index, v);
    });
    this.updateIntxState();
  }

  /** The state to save (a copy): per index enabled, masked and pending; whether INTx is asserted. */
  saveState(): IrqState {
    return {
      indexes: this.tables.map((t) => {
        const masked: boolean[] = [];
        const pending: boolean[] = [];
        for (let v = 0; v < t.count; v++) {
          masked.push(t.isMasked(v));
          pending.push(t.isPending(v));
        }
        return { enabled: t.enabled, masked, pending };
      }),
      intxAsserted: this.intxAsserted,
    };
  }

  /**
   * Take a saved state (its vector counts must match: the caller checked).
   * The eventfds stay as they are (the client's); nothing is signalled here:
   * pending vectors fire once delivery is possible (thaw(), an eventfd, an UNMASK).
   */
  restoreState(state: IrqState): void {
    this.tables.forEach((t, index) => {
      const s = state.indexes[index]!;
      t.enabled = s.enabled;
      for (let v = 0; v < t.count; v++) {
        t.setMasked(v, s.masked[v]!);
        t.setPending(v, s.pending[v]!);
      }
    });
    this.intxAsserted = state.intxAsserted && this.tables[PciIrq.INTX]!.count > 0;
    this.updateIntxState();
  }

  /**
   * The connection validated the request as libvfio-user does (index, one
   * DATA_* and one ACTION_*, the vector range, DATA_BOOL bytes, fds only with
   * DATA_EVENTFD and as many as `count`, TRIGGER only on ERR/REQ: see
   * server/endpoint.ts); what is checked here is what this model supports.
   */
  private apply(req: SetIrqsRequest, fds: number[]): void {
    const t = this.tables[req.index]!; // index < numIrqs (PciIrq.COUNT): one table per index
    const data = req.flags & IrqSetFlag.DATA_TYPE_MASK;
    const action = req.flags & IrqSetFlag.ACTION_TYPE_MASK;
    const { start, count } = req;
    const selected = (i: number): boolean => data !== IrqSetFlag.DATA_BOOL || req.bools![i] !== 0;
    this.log.debug({ index: req.index, flags: req.flags, start, count, fds: fds.length }, 'SET_IRQS');

    if (action === IrqSetFlag.ACTION_TRIGGER) {
      if (data === IrqSetFlag.DATA_EVENTFD) {
        if (count === 0) return;
        t.enabled = true;
        for (let i = 0; i < count; i++) {
          const fd = fds.length > 0 ? fds[i] : undefined;
          if (fd !== undefined) fds[i] = -1; // now owned by the table
          t.setFd(start + i, fd);
        }
        for (let i = 0; i < count; i++) this.deliverPending(req.index, start + i);
        this.updateIntxState();
        return;
      }
      if (data === IrqSetFlag.DATA_NONE && count === 0) {
        t.clear();
        if (req.index === PciIrq.INTX) {
          this.dropResample();
          this.intxAsserted = false;
        }
        this.updateIntxState();
        return;
      }
      // Loopback trigger (NONE: every vector in range; BOOL: the selected ones).
      for (let i = 0; i < count; i++) if (selected(i)) this.fire(req.index, start + i);
      return;
    }

    if (action === IrqSetFlag.ACTION_MASK) {
      if (data === IrqSetFlag.DATA_EVENTFD)
        throw VfioUserError.invalid('SET_IRQS: MASK with an eventfd is not supported');
      for (let i = 0; i < count; i++) if (selected(i)) t.setMasked(start + i, true);
      return;
    }
    if (action === IrqSetFlag.ACTION_UNMASK) {
      if (data === IrqSetFlag.DATA_EVENTFD) {
        if (req.index !== PciIrq.INTX) throw VfioUserError.invalid('SET_IRQS: UNMASK eventfd only for INTx');
        this.dropResample();
        const [fd] = fds; // INTx has one vector: at most one fd
        if (fd !== undefined) {
          fds[0] = -1;
          this.watchResample(fd);
        }
        return;
      }
      for (let i = 0; i < count; i++) {
        if (!selected(i)) continue;
        t.setMasked(start + i, false);
        if (req.index === PciIrq.INTX) this.intxAsserted = false;
        this.deliverPending(req.index, start + i);
      }
      this.updateIntxState();
      return;
    }
    throw VfioUserError.invalid(`SET_IRQS: bad flags 0x${req.flags.toString(16)}`);
  }

  /** An MSI/MSI-X trigger while bus mastering is off: lost (a vector out of range still throws). */
  private dropMessage(index: number, vector: number): false {
    const t = this.tables[index]!;
    if (vector < 0 || vector >= t.count || !Number.isInteger(vector)) {
      throw new RangeError(`irq: vector ${vector} out of range for index ${index} (${t.count} vectors)`);
    }
    this.droppedWithoutBusMaster++;
    return false;
  }

  /** Deliver or pend one vector. */
  private fire(index: number, vector: number): boolean {
    const t = this.tables[index]!;
    if (vector < 0 || vector >= t.count || !Number.isInteger(vector)) {
      throw new RangeError(`irq: vector ${vector} out of range for index ${index} (${t.count} vectors)`);
    }
    const blocked = this.frozen || t.isMasked(vector) || (index === PciIrq.INTX && this.intxDisabled);
    if (blocked || !t.signal(vector)) {
      t.setPending(vector, true);
      this.limiter.debug('irq-pending', { index, vector }, 'irq pending');
      if (index === PciIrq.INTX) this.updateIntxState();
      return false;
    }
    t.setPending(vector, false);
    this.#signalled[index]!++;
    if (index === PciIrq.INTX) {
      t.setMasked(vector, true); // automasked until the client unmasks
      this.intxAsserted = true;
      this.updateIntxState();
    }
    this.log.trace({ index, vector }, 'irq signalled');
    return true;
  }

  private deliverPending(index: number, vector: number): void {
    const t = this.tables[index]!;
    if (t.isPending(vector) && !t.isMasked(vector) && t.fd(vector) !== undefined) this.fire(index, vector);
  }

  private updateIntxState(): void {
    const t = this.tables[PciIrq.INTX]!;
    if (t.count === 0) return;
    this.onIntxState?.(this.intxAsserted || t.isPending(0));
  }

  private watchResample(fd: number): void {
    let watcher: Watcher;
    try {
      watcher = native.watchReadable(fd, () => {
        let count: number;
        try {
          count = native.eventfdRead(fd);
        } catch {
          count = 0;
        }
        if (count === 0) {
          // Readable but not an eventfd with a count (a hostile client's file or socket): stop
          // watching rather than spin.
          this.limiter.warn('irq-resample-fd', {}, 'INTx resample fd is not a usable eventfd: dropped');
          this.dropResample();
          return;
        }
        const t = this.tables[PciIrq.INTX]!;
        t.setMasked(0, false);
        this.intxAsserted = false;
        this.deliverPending(PciIrq.INTX, 0);
        this.updateIntxState();
      });
    } catch (err) {
      closeQuietly(fd);
      throw VfioUserError.invalid(`SET_IRQS: cannot watch resample fd: ${(err as Error).message}`);
    }
    this.resample = { fd, watcher };
  }

  private dropResample(): void {
    if (!this.resample) return;
    this.resample.watcher.close();
    closeQuietly(this.resample.fd);
    this.resample = undefined;
  }
}
