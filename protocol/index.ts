/**
 * The vfio-user wire codec: constants, header, and every message in both
 * directions, one file per command group (version, dma, device, regions,
 * region-access, irqs, dma-access, features, migration).
 */
export * from './constants.js';
export * from './errors.js';
export * from './header.js';
export * from './capabilities.js';
export * from './version.js';
export * from './dma.js';
export * from './device.js';
export * from './regions.js';
export * from './region-access.js';
export * from './irqs.js';
export * from './dma-access.js';
export * from './features.js';
export * from './migration.js';
