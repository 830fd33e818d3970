/** The vfio-user client: drive a vfio-user device server from TypeScript (tests, device authors). */
export { VfioUserClient, type ClientOptions } from './vfio-user-client.js';
export { QEMU_CAPABILITIES } from './negotiation.js';
export type { RawMessage, RequestOptions } from './request-channel.js';
export type { RegionInfoWithFd } from './region-access.js';
export type { SetIrqsOptions } from './irqs.js';
export type { DmaMapOptions } from './dma.js';
export { VfioUserClientError, errnoName } from './errors.js';
export { GuestMemory, type GuestBacking } from './guest-memory.js';
export { DmaMapTable, type DmaMapEntry } from './dma-map-table.js';
export {
  barRead32,
  barWrite32,
  cfgRead,
  cfgWrite,
  enableDevice,
  PciCommandBit,
  probeBar,
  type EnableOptions,
  walkCapabilities,
  type BarProbe,
  type PciCapability,
  type RegionAccessor,
} from './pci.js';
export { DirtyBitmap } from './migration.js';
export { migrate, type MigrateOptions, type MigrationMemory, type MigrationReport } from './migrate.js';
export {
  DeviceFeature,
  DeviceFeatureFlag,
  MigrationFlag,
  MigrationState,
  migrationStateName,
  type MigrationStateName,
} from '../protocol/features.js';
