/**
 * The PCI-IDIO-16 as a PciDevice: the Idio16 register model behind BAR2 and
 * its interrupt line on INTx pin A. Linux's gpio-pci-idio-16 binds to it and
 * registers a 32-line gpiochip (OUT0-15, IIN0-15).
 */
import {
  LogLimiter,
  defineDeviceState,
  Field,
  PciDevice,
  silentLogger,
  type AccessSize,
  type BarType,
  type CounterChild,
  type DeviceMetrics,
  type DeviceState,
  type Logger,
  type UnsealedFdPolicy,
} from 'vfio-user-ts';
import { Idio16, type Idio16SavedState } from './idio16.js';
import {
  IDIO16_BAR_INDEX,
  IDIO16_BAR_SIZE,
  IDIO16_IO_BAR_SIZE,
  IDIO16_DEVICE_ID,
  IDIO16_VENDOR_ID,
} from './registers.js';

/** Class code 0x118000: signal processing controller, other (our choice for digital I/O; the driver matches on ids only). */
export const IDIO16_CLASS_CODE = 0x118000;

export interface GpioDeviceOptions {
  /** Device name in logs. Default 'gpio'. */
  name?: string;
  /** BAR2's kind: 'io' (default: 8 bytes of I/O space, as on the real card) or 'mem32' (256 bytes). */
  barType?: Extract<BarType, 'mem32' | 'io'>;
  /** The inputs' level at power-on (bit n = IINn). Default 0. */
  initialInputs?: number;
  log?: Logger | undefined;
  /** DMA_MAP fds not sealed against shrinking (PciDeviceOptions.unsealedDmaFds; the card never DMAs). */
  unsealedDmaFds?: UnsealedFdPolicy;
  /** Count line changes: vfio_user_gpio_line_changes_total{device,line} (line OUT0-15, IIN0-15). Default: none. */
  metrics?: DeviceMetrics;
}

/** The kind of the card's saved state (DeviceState.kind). */
export const GPIO_STATE_KIND = 'pci-idio-16';
/** The version of the card's saved state this module writes. */
export const GPIO_STATE_VERSION = 1;

/** The card's saved state, version 1: Idio16SavedState's fields. */
export const gpioStateFields = Field.struct({
  outputs: Field.u16(),
  irqEnabled: Field.bool(),
  pending: Field.u8(),
  filtersActive: Field.bool(),
});

/** The DeviceState of a card whose registers are `gpio`. */
export function gpioDeviceState(gpio: Idio16): DeviceState<Idio16SavedState> {
  return defineDeviceState({
    kind: GPIO_STATE_KIND,
    version: GPIO_STATE_VERSION,
    schema: gpioStateFields,
    save: () => gpio.saveState(),
    load: (s) => gpio.loadState(s),
  });
}

/** A PCI-IDIO-16: `device` to serve, `gpio` for the host side (inputs, outputs, events). */
export interface GpioDevice {
  readonly device: PciDevice;
  readonly gpio: Idio16;
}

/** Split an access of `size` bytes into byte registers, little-endian (each byte keeps its side effects). */
function readBytes(gpio: Idio16, offset: number, size: AccessSize): number {
  let value = 0;
  for (let i = 0; i < size; i++) value |= gpio.readRegister(offset + i) << (8 * i);
  return value >>> 0;
}

function writeBytes(gpio: Idio16, offset: number, size: AccessSize, value: number): void {
  for (let i = 0; i < size; i++) gpio.writeRegister(offset + i, (value >>> (8 * i)) & 0xff);
}

/** Every output the guest flips and every input the host flips, per line. */
function countLineChanges(gpio: Idio16, metrics: DeviceMetrics): void {
  const changes = metrics.counter('vfio_user_gpio_line_changes_total', 'GPIO line level changes, by line', ['line']);
  const lines = (prefix: string): CounterChild[] =>
    Array.from({ length: 16 }, (_, n) => changes.labels(`${prefix}${n}`));
  const outputs = lines('OUT');
  const inputs = lines('IIN');
  const count = (cells: CounterChild[], state: number, previous: number): void => {
    for (let flipped = (state ^ previous) & 0xffff, n = 0; flipped !== 0; flipped >>>= 1, n++)
      if (flipped & 1) cells[n]!.inc();
  };
  gpio.on('outputs', (state, previous) => count(outputs, state, previous));
  gpio.on('inputs', (state, previous) => count(inputs, state, previous));
}

/**
 * Build a PCI-IDIO-16. Serve `device` like any PciDevice (`serve(device, ...)`);
 * drive and watch the lines through `gpio`:
 *
 * ```ts
 * const { device, gpio } = createGpioDevice();
 * gpio.on('outputs', (state) => console.log(state.toString(16)));
 * gpio.setInput(3, 1);
 * ```
 */
export function createGpioDevice(options: GpioDeviceOptions = {}): GpioDevice {
  const barType = options.barType ?? 'io';
  // The model is created first; the INTx hook reaches the device once it exists.
  let device: PciDevice | undefined;
  const gpio = new Idio16((asserted) => {
    if (asserted) device?.irq.trigger(0);
  });
  if (options.initialInputs !== undefined) gpio.setInputs(options.initialInputs);
  const name = options.name ?? 'gpio';
  const log = (options.log ?? silentLogger).child({ device: name, model: 'pci-idio-16' });
  // The guest (outputs, interrupt enable) and the control socket (inputs) set the pace: rate-limited.
  const limiter = new LogLimiter(log);
  gpio.on('outputs', (state, previous) => limiter.debug('outputs', { outputs: state, previous }, 'outputs changed'));
  gpio.on('inputs', (state, previous) => limiter.debug('inputs', { inputs: state, previous }, 'inputs changed'));
  gpio.on('interrupt', () => limiter.debug('interrupt', {}, 'change-of-state interrupt'));
  if (options.metrics?.enabled) countLineChanges(gpio, options.metrics);
  device = new PciDevice({
    name,
    id: { vendor: IDIO16_VENDOR_ID, device: IDIO16_DEVICE_ID, classCode: IDIO16_CLASS_CODE },
    bars: [
      {
        index: IDIO16_BAR_INDEX,
        size: barType === 'io' ? IDIO16_IO_BAR_SIZE : IDIO16_BAR_SIZE,
        type: barType,
        read: (offset, size) => readBytes(gpio, offset, size),
        write: (offset, size, value) => writeBytes(gpio, offset, size, value),
      },
    ],
    interrupts: { intx: 'A' },
    onReset: () => gpio.reset(),
    // The card does no DMA and has no work in flight: a quiesced card just raises no interrupts,
    // which the library ensures (they pend until the resume).
    state: gpioDeviceState(gpio),
    ...(options.log ? { log: options.log } : {}),
    ...(options.unsealedDmaFds ? { unsealedDmaFds: options.unsealedDmaFds } : {}),
  });
  return { device, gpio };
}
