/**
 * vfio-user-ts: write PCI devices in TypeScript and serve them to QEMU's
 * vfio-user-pci. See docs/writing-a-device.md.
 *
 * This is the package's main entry point ('vfio-user-ts'); the built-in
 * devices ('vfio-user-ts/nvme', 'vfio-user-ts/gpio') are written against it
 * and nothing else, like any device.
 */
export * from './pci/index.js';
export * from './irq/index.js';
export { serve, DeviceServer, type DeviceServerEvents, type ServeOptions } from './server.js';
/** Replacing a served device under a live client (DeviceServer.replaceDevice; what `serve --watch` does). */
export {
  ReplaceDeviceError,
  type NextDevice,
  type ReplaceDeviceOptions,
  type ReplaceDeviceResult,
  type ReplaceDeviceStage,
} from './replace-device.js';
export {
  combineObservers,
  type Connection,
  type ConnectionObserver,
  type ConnectionOptions,
  type ConnectionState,
  type ConnectionStateEvent,
  type DmaRequestEvent,
  type MessageEvent,
} from './connection/index.js';
export {
  MetricsRegistry,
  serveMetrics,
  noMetrics,
  NO_METRICS,
  DEFAULT_SECONDS_BUCKETS,
  type CounterChild,
  type CounterMetric,
  type DeviceMetrics,
  type GaugeChild,
  type GaugeMetric,
  type HistogramChild,
  type HistogramMetric,
  type HistogramOptions,
  type LabeledMetric,
  type MetricsHttpOptions,
  type MetricsHttpServer,
  type MetricsRegistryOptions,
} from './metrics/index.js';
export {
  DmaSpace,
  DmaError,
  BusMasterDisabledError,
  DmaPin,
  ScatterGather,
  type DmaAccess,
  type DmaHold,
  type DmaMapListener,
  type DmaRange,
  type DmaRegion,
  type DmaSpaceOptions,
  type DmaTransferOptions,
  type DmaStats,
  type GuestMemoryAccess,
  type UnsealedFdPolicy,
} from './dma/index.js';
export {
  readNowait,
  fallocate,
  fallocateSync,
  startWriteback,
  NOWAIT_UNSUPPORTED,
  NOWAIT_WOULD_BLOCK,
  type FallocateMode,
} from './file-io/index.js';
export { VfioUserError } from '../protocol/errors.js';
export {
  type ClientPort,
  type DirtyLogRange,
  type DmaMapRequest,
  type Endpoint,
  type IrqInfo,
  type MigrationEndpoint,
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
export {
  DeviceFeature,
  DeviceFeatureFlag,
  MigrationFlag,
  MigrationState,
  migrationStateName,
  type MigrationStateName,
} from '../protocol/features.js';
/** Device state: declaring it, its fields, the errors of loading it (docs/writing-a-device.md, "State"). */
export {
  Field,
  StateError,
  type FieldValue,
  type StateField,
  type StateReader,
  type StateWriter,
  type StructValue,
} from './state/fields.js';
export {
  defineDeviceState,
  olderState,
  MAX_DEVICE_STATE_BYTES,
  type DeviceState,
  type OlderDeviceState,
} from './state/device-state.js';
export { STATE_FORMAT_VERSION } from './state/envelope.js';
export {
  DeviceMigration,
  type MigratableDevice,
  type MigrationDataStream,
  type SavePhase,
} from './migration/device-migration.js';
export { createLogger, defaultLogger, silentLogger, type Logger, type LoggerOptions } from './log.js';
export { LogLimiter, type LogLimiterOptions } from './log-limiter.js';
/** For device modules loaded by `vfio-user-ts serve --device ./my-device.js` (docs/cli.md). */
export type { DeviceContext, HostedDevice, DeviceFactory, OptionsValidator } from './device-module.js';
