/**
 * Watching a connection from outside: one typed hook that sees every message
 * a client sends (with our answer), every server-to-client DMA request, and
 * the connection's state changes. Metrics (server/metrics) count through it;
 * a protocol trace can decode through it (the request and reply bytes are
 * part of every event).
 *
 * Zero cost when nobody observes: the connection holds `undefined` and reads
 * no clock; the events are built only when an observer is set. An observer
 * runs synchronously on the event loop, in the middle of the connection's
 * work: keep it short, never throw (a throw is caught and logged), and copy
 * what you keep (the byte views are valid only during the call).
 */

/** Where a connection is: negotiating VERSION, serving, draining, gone. */
export type ConnectionState = 'version' | 'ready' | 'closing' | 'closed';

/** A client request and what we answered: one per message, VERSION included. */
export interface MessageEvent {
  /** The connection's id (the `conn` field of its log lines). */
  readonly conn: number;
  /** The header's command (VfioUserCommand; commandName() names it). */
  readonly command: number;
  readonly id: number;
  /** The header's flags (NO_REPLY, ...). */
  readonly flags: number;
  /** Bytes of the request, header included. */
  readonly size: number;
  /** fds that came with it. */
  readonly fds: number;
  /** 0: success, else the errno of the error reply (also when NO_REPLY suppressed the reply). */
  readonly errno: number;
  /** Why it failed (the VfioUserError's message), when it did. */
  readonly reason: string | undefined;
  /** Bytes of the reply we sent, header included (0: none was sent). */
  readonly replySize: number;
  /** fds sent with the reply (a mappable region's fd). */
  readonly replyFds: number;
  /** Milliseconds from dispatch to the reply (handler time; waiting behind earlier requests excluded). */
  readonly durationMs: number;
  /** The request bytes (valid during the call only). */
  readonly request: Uint8Array;
  /** The reply bytes (valid during the call only); undefined when no reply was sent. */
  readonly reply: Uint8Array | undefined;
}

/** A server-to-client DMA_READ or DMA_WRITE (one per chunk), once it ended. */
export interface DmaRequestEvent {
  readonly conn: number;
  /** VfioUserCommand.DMA_READ or DMA_WRITE. */
  readonly command: number;
  readonly id: number;
  /** Guest address of the chunk. */
  readonly addr: bigint;
  /** Bytes asked for (DMA_READ) or sent (DMA_WRITE). */
  readonly count: number;
  /** 0: the client answered with success; else its errno, ETIMEDOUT, or ENOTCONN when the stream closed first. */
  readonly errno: number;
  readonly durationMs: number;
  /** Our request (valid during the call only). */
  readonly request: Uint8Array;
  /** The client's reply, when one came (valid during the call only). */
  readonly reply: Uint8Array | undefined;
}

/** What an observer is told about the connection itself. */
export interface ConnectionStateEvent {
  readonly conn: number;
  /** 'version' right after accept, 'ready' after VERSION, then 'closing' and 'closed'. */
  readonly state: ConnectionState;
  /** Why it is closing (with 'closing' and 'closed'). */
  readonly reason: string | undefined;
}

/** Every method is optional; each one only costs when it is there. */
export interface ConnectionObserver {
  message?(event: MessageEvent): void;
  dmaRequest?(event: DmaRequestEvent): void;
  state?(event: ConnectionStateEvent): void;
}

/** One observer that tells each of `observers` in turn (undefined entries skipped; undefined when none is left). */
export function combineObservers(...observers: (ConnectionObserver | undefined)[]): ConnectionObserver | undefined {
  const list = observers.filter((o) => o !== undefined);
  if (list.length <= 1) return list[0];
  return {
    message: (e) => {
      for (const o of list) o.message?.(e);
    },
    dmaRequest: (e) => {
      for (const o of list) o.dmaRequest?.(e);
    },
    state: (e) => {
      for (const o of list) o.state?.(e);
    },
  };
}
