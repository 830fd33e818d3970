/** The client's DMA address space, and the device's ways into it. */
export * from './dma-space.js';
export * from './region.js';
export * from './errors.js';
export * from './pin.js';
export * from './scatter-gather.js';
