/**
 * vfio-user-ts: write PCI devices in TypeScript and serve them to QEMU's
 * vfio-user-pci. See docs/writing-a-device.md.
 */
export * from './pci/index.js';
export * from './irq/index.js';
export { serve, DeviceServer } from './server.js';
export { DmaSpace } from './dma/index.js';
export { VfioUserError } from '../protocol/errors.js';
export {
  type ClientPort,
  type DmaMapRequest,
  type Endpoint,
  type IrqInfo,
  type RegionDescription,
  type ResetReason,
  type SetIrqsRequest,
  type SparseArea,
} from './endpoint.js';
export {
  DeviceFlag,
  DmaMapFlag,
  DmaUnmapFlag,
  Errno,
  HeaderFlag,
  IrqInfoFlag,
  IrqSetFlag,
  Limits,
  PciIrq,
  PciRegion,
  RegionCap,
  RegionFlag,
  VfioUserCommand,
} from '../protocol/constants.js';
export { createLogger, silentLogger, type Logger, type LoggerOptions } from './log.js';
/** For device modules loaded by `vfio-user-ts serve --device ./my-device.js` (docs/cli.md). */
export type { DeviceContext, HostedDevice, DeviceFactory, OptionsValidator } from '../cli/device-module.js';
