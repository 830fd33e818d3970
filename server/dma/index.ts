/** The client's DMA address space. */
export * from './dma-space.js';
export * from './region.js';
export * from './errors.js';
