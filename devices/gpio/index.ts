/**
 * Built-in device: an ACCES PCI-IDIO-16 (16 outputs, 16 inputs with
 * change-of-state interrupts) that Linux's gpio-pci-idio-16 driver drives.
 * See docs/gpio.md.
 */
export {
  createGpioDevice,
  gpioDeviceState,
  gpioStateFields,
  GPIO_STATE_KIND,
  GPIO_STATE_VERSION,
  IDIO16_CLASS_CODE,
  type GpioDevice,
  type GpioDeviceOptions,
} from './device.js';
export { Idio16, checkLine, type Idio16Events, type Idio16SavedState, type Idio16State } from './idio16.js';
export * from './registers.js';
export {
  startGpioControl,
  defaultControlPath,
  gpioControlRequest,
  runGpioCli,
  formatGpioState,
  GpioControlClient,
  GPIO_USAGE,
  MAX_LINE,
  MAX_CLIENTS,
  MAX_UNREAD,
  type GpioControlRequest,
  type GpioControlMessage,
  type GpioControlOptions,
  type GpioControlServer,
  type GpioCliIo,
} from './control.js';
