/** Per-client connection: VERSION negotiation, dispatch, server-to-client DMA. */
export { Connection, type ConnectionOptions } from './connection.js';
