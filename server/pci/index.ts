/** The device model: `PciDevice` and the types a device author writes against. */
export { PciDevice, DEFAULT_RESET_TIMEOUT_MS, type CapabilityOffsets } from './device.js';
export type {
  AccessSize,
  BarOptions,
  BarRead64Handler,
  BarReadHandler,
  BarType,
  BarWrite64Handler,
  BarWriteHandler,
  CapabilityOptions,
  ExpressOptions,
  InterruptOptions,
  IntxPin,
  MemoryArea,
  MsiOptions,
  MsixOptions,
  PciDeviceOptions,
  PciId,
  QuiesceReason,
} from './types.js';
export { ConfigSpace, type ConfigWrite, type ConfigWriteHook } from './config-space.js';
export { Cfg, PciCommand, PciStatus, BarBits } from './header.js';
export { CapId, ExtCapId } from './capabilities/capability.js';
export { walkCapabilities, walkExtendedCapabilities } from './capabilities/chain.js';
export { ExpressReg } from './capabilities/express.js';
export type { MsixLayout } from './bar-layout.js';
