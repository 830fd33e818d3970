/** Per-client connection: VERSION negotiation, dispatch, server-to-client DMA. */
export { Connection, type ConnectionOptions } from './connection.js';
export {
  combineObservers,
  type ConnectionState,
  type ConnectionObserver,
  type ConnectionStateEvent,
  type DmaRequestEvent,
  type MessageEvent,
} from './observer.js';
export { turnAway } from './turn-away.js';
