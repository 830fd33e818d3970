/**
 * The register model of an ACCES PCI-IDIO-16: 16 FET outputs, 16 isolated
 * inputs with change-of-state interrupts, input filters. It knows nothing of
 * PCI or vfio-user: device.ts puts it behind BAR2 and INTx.
 *
 * The host (the program hosting the device) plays the outside world: it drives
 * the inputs with setInput/setInputs and watches the outputs through the
 * 'outputs' event.
 */
import { EventEmitter } from 'node:events';
import { IDIO16_LINES, IrqStatus, Idio16Reg } from './registers.js';

/** Events of an Idio16. */
export interface Idio16Events {
  /** The guest (or a reset) changed the outputs: the new and the previous 16-bit state. */
  outputs: [state: number, previous: number];
  /** The host changed the inputs: the new and the previous 16-bit state. */
  inputs: [state: number, previous: number];
  /** The interrupt line rose (a change-of-state interrupt became pending while enabled). */
  interrupt: [];
  /** Every register went back to its power-on state. */
  reset: [];
}

/** Everything the model holds, for the control socket and for tests. */
export interface Idio16State {
  outputs: number;
  inputs: number;
  irqEnabled: boolean;
  irqPending: boolean;
  /** The interrupt status register as the guest would read it. */
  irqStatus: number;
  filtersActive: boolean;
  /** Rising edges of the interrupt line since this model was created. */
  interrupts: number;
}

/**
 * What the card keeps of its own and a migration carries (Idio16.saveState):
 * the outputs, the interrupt enable, the latched change-of-state groups
 * (IrqStatus.GROUP0_7 | GROUP8_15; non-zero = pending) and the input filter
 * setting. The inputs are not in it: they are the outside world's, and the
 * host on the other side drives its own.
 */
export interface Idio16SavedState {
  outputs: number;
  irqEnabled: boolean;
  /** IrqStatus group bits (0..3). */
  pending: number;
  filtersActive: boolean;
}

const MASK16 = 0xffff;
const GROUPS = IrqStatus.GROUP0_7 | IrqStatus.GROUP8_15;

function checkMask(mask: number): number {
  if (!Number.isInteger(mask) || mask < 0 || mask > MASK16) {
    throw new RangeError(`input mask must be an integer in 0..0xffff, got ${String(mask)}`);
  }
  return mask;
}

/** Throws RangeError unless line is an integer in 0..15. */
export function checkLine(line: number): number {
  if (!Number.isInteger(line) || line < 0 || line >= IDIO16_LINES) {
    throw new RangeError(`line must be an integer in 0..15, got ${String(line)}`);
  }
  return line;
}

export class Idio16 extends EventEmitter<Idio16Events> {
  private out = 0;
  private in = 0;
  private irqEnabled = false;
  /** IrqStatus group bits latched since the last clear; non-zero means pending. */
  private changed = 0;
  private filtersActive = true;
  private interrupts = 0;

  /**
   * @param onInterruptLine called with true when the interrupt line rises and
   * false when it falls (cleared, disabled or reset). device.ts raises INTx on true.
   */
  constructor(private readonly onInterruptLine: (asserted: boolean) => void = () => {}) {
    super();
  }

  /** The 16 outputs as the guest last wrote them (bit n = OUTn). */
  getOutputs(): number {
    return this.out;
  }

  /** The 16 inputs as the host last set them (bit n = IINn). */
  getInputs(): number {
    return this.in;
  }

  /** Drive input `line` (0-15) high (true/1) or low. */
  setInput(line: number, value: boolean | number): void {
    checkLine(line);
    const bit = 1 << line;
    this.setInputs(value ? this.in | bit : this.in & ~bit);
  }

  /** Drive all 16 inputs at once (bit n = IINn). */
  setInputs(mask: number): void {
    checkMask(mask);
    const previous = this.in;
    const diff = previous ^ mask;
    if (diff === 0) return;
    this.in = mask;
    this.emit('inputs', mask, previous);
    if (!this.irqEnabled) return;
    const wasAsserted = this.asserted;
    if (diff & 0x00ff) this.changed |= IrqStatus.GROUP0_7;
    if (diff & 0xff00) this.changed |= IrqStatus.GROUP8_15;
    this.lineChanged(wasAsserted);
  }

  /** A snapshot of every register. */
  state(): Idio16State {
    return {
      outputs: this.out,
      inputs: this.in,
      irqEnabled: this.irqEnabled,
      irqPending: this.changed !== 0,
      irqStatus: this.irqStatus(),
      filtersActive: this.filtersActive,
      interrupts: this.interrupts,
    };
  }

  /** The registers a migration carries (see Idio16SavedState). */
  saveState(): Idio16SavedState {
    return { outputs: this.out, irqEnabled: this.irqEnabled, pending: this.changed, filtersActive: this.filtersActive };
  }

  /**
   * Take over saved registers (RangeError for values the card cannot hold,
   * before anything changes). The interrupt line is not raised again: whoever
   * restores the card restores its interrupt state too (PciDevice does). The
   * host sees the outputs change ('outputs' event) if they do.
   */
  loadState(state: Idio16SavedState): void {
    if (!Number.isInteger(state.outputs) || state.outputs < 0 || state.outputs > MASK16)
      throw new RangeError(`outputs ${String(state.outputs)} do not fit 16 lines`);
    if (!Number.isInteger(state.pending) || (state.pending & ~GROUPS) !== 0)
      throw new RangeError(`pending ${String(state.pending)} has bits other than the two input groups`);
    if (typeof state.irqEnabled !== 'boolean' || typeof state.filtersActive !== 'boolean')
      throw new RangeError('irqEnabled and filtersActive must be booleans');
    this.irqEnabled = state.irqEnabled;
    this.changed = state.pending;
    this.filtersActive = state.filtersActive;
    this.setOutputs(state.outputs);
  }

  /** Whether the interrupt line is asserted (pending and enabled). */
  get asserted(): boolean {
    return this.irqEnabled && this.changed !== 0;
  }

  /** A guest byte read at `offset`, with the register's read side effects. */
  readRegister(offset: number): number {
    switch (offset) {
      case Idio16Reg.OUT0_7:
        return this.out & 0xff;
      case Idio16Reg.OUT8_15:
        return this.out >>> 8;
      case Idio16Reg.IN0_7:
        return this.in & 0xff;
      case Idio16Reg.IN8_15:
        return this.in >>> 8;
      case Idio16Reg.IRQ_CTL:
        this.setIrqEnabled(true);
        return 0;
      case Idio16Reg.FILTER_CTL:
        this.filtersActive = true;
        return 0;
      case Idio16Reg.IRQ_STATUS:
        return this.irqStatus();
      default:
        return 0;
    }
  }

  /** A guest byte write at `offset` (value 0-255). */
  writeRegister(offset: number, value: number): void {
    value &= 0xff;
    switch (offset) {
      case Idio16Reg.OUT0_7:
        this.setOutputs((this.out & 0xff00) | value);
        break;
      case Idio16Reg.OUT8_15:
        this.setOutputs((this.out & 0x00ff) | (value << 8));
        break;
      case Idio16Reg.IN0_7:
        this.clearInterrupt();
        break;
      case Idio16Reg.IRQ_CTL:
        this.setIrqEnabled(false);
        break;
      case Idio16Reg.FILTER_CTL:
        this.filtersActive = false;
        break;
      default:
        // 0x5, 0x6 and the rest of the BAR: unused.
        break;
    }
  }

  /**
   * Power-on state: outputs low, IRQ disabled and nothing pending, filters
   * active. The inputs are the outside world's and keep their level.
   */
  reset(): void {
    const wasAsserted = this.asserted;
    this.irqEnabled = false;
    this.changed = 0;
    this.filtersActive = true;
    this.lineChanged(wasAsserted);
    this.setOutputs(0);
    this.emit('reset');
  }

  private irqStatus(): number {
    return this.changed === 0 ? 0 : this.changed | IrqStatus.PENDING;
  }

  private setOutputs(state: number): void {
    const previous = this.out;
    if (state === previous) return;
    this.out = state;
    this.emit('outputs', state, previous);
  }

  private clearInterrupt(): void {
    const wasAsserted = this.asserted;
    this.changed = 0;
    this.lineChanged(wasAsserted);
  }

  private setIrqEnabled(enabled: boolean): void {
    const wasAsserted = this.asserted;
    this.irqEnabled = enabled;
    this.lineChanged(wasAsserted);
  }

  private lineChanged(wasAsserted: boolean): void {
    const now = this.asserted;
    if (now === wasAsserted) return;
    if (now) this.interrupts++;
    this.onInterruptLine(now);
    if (now) this.emit('interrupt');
  }
}
