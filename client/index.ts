/** The vfio-user client: drive a vfio-user device server from TypeScript (tests, device authors). */
export { VfioUserClient, QEMU_CAPABILITIES } from './vfio-user-client.js';
export type { ClientOptions, RawMessage, RequestOptions, RegionInfo, SetIrqsOptions, DmaMapOptions } from './vfio-user-client.js';
export { VfioUserClientError, errnoName } from './errors.js';
export { GuestMemory, type GuestBacking } from './guest-memory.js';
export { DmaSpace, type DmaRange } from './dma-space.js';
export { cfgRead, cfgWrite, probeBar, walkCapabilities, type BarProbe, type PciCapability, type RegionAccessor } from './pci.js';
