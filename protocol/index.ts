/** The vfio-user wire codec: constants, header, and every message in both directions. */
export * from './constants.js';
export * from './errors.js';
export * from './header.js';
export * from './capabilities.js';
export * from './version.js';
export * from './dma-map.js';
export * from './device-info.js';
export * from './region-info.js';
export * from './region-access.js';
export * from './dma-access.js';
export * from './feature.js';
export * from './reset.js';
