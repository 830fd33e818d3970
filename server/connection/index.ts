/** Per-client connection: VERSION negotiation, dispatch, server-to-client DMA. */
export { Connection, type ConnectionOptions, type ConnectionState } from './connection.js';
