/** Per-client connection: VERSION negotiation, dispatch, server-to-client DMA. */
export * from './connection.js';
export * from './client-port.js';
export * from './context.js';
export * from './negotiate.js';
export { handlerFor } from './dispatch.js';
export { regionCapabilities } from './device-handlers.js';
