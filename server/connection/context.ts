/** What a command handler gets and returns. */
import type { Logger } from 'pino';
import type { Endpoint } from '../endpoint.js';
import type { MessageHeader } from '../../protocol/index.js';
import type { ReceivedFds } from '../transport/index.js';

export interface RequestContext {
  header: MessageHeader;
  /** The whole message, header included. */
  message: Uint8Array;
  /** fds that came with it; what a handler does not take is closed afterwards. */
  fds: ReceivedFds;
  endpoint: Endpoint;
  /** Our max_data_xfer_size: REGION_READ/WRITE counts above it are EINVAL. */
  maxDataXferSize: number;
  /** The client's max_msg_fds: never send it more fds than that. */
  clientMaxMsgFds: number;
  /** The client's max_data_xfer_size: MIG_DATA_READ/WRITE sizes above it are EINVAL (libvfio-user). */
  clientMaxDataXferSize: number;
  log: Logger;
}

export interface HandlerResult {
  reply: Uint8Array;
  /** fds to send with the reply (borrowed: not closed by the connection). */
  fds?: number[];
}

export type Handler = (ctx: RequestContext) => HandlerResult | Promise<HandlerResult>;
