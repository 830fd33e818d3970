/** Per-client connection: VERSION negotiation, dispatch, server-to-client DMA. */
export * from './connection.js';
export * from './client-port.js';
export * from './context.js';
