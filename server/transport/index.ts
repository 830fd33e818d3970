/** Transport: listening socket and per-client channels with fd bookkeeping. */
export * from './channel.js';
export * from './listener.js';
export { ReceivedFds } from './received-fds.js';
