/**
 * Channel: one connected vfio-user stream (a NativeChannel) plus bookkeeping of
 * the fds that arrived with messages (received-fds.ts), so that none leaks:
 * fds a handler does not take are closed after it runs, and everything still
 * held is closed when the channel closes.
 *
 * A send that fails ends the channel like a socket error does (onClose with
 * the reason): the client hung up (EPIPE, ECONNRESET), or a reply's fds could
 * not be queued; either way the stream now lacks a reply its client waits for,
 * so there is nothing left to serve (and nothing to log per message: a client
 * that hangs up with requests in flight used to cost one warning per reply).
 */
import type { Logger } from 'pino';
import { native, type NativeChannel } from '../../native/index.js';
import { LogLimiter } from '../log-limiter.js';
import { HeldFds, ReceivedFds } from './received-fds.js';

export interface ChannelOptions {
  /** Largest message received whole (a larger one delivers its header alone). */
  maxMessageSize: number;
  /** Room for this many fds on one message (more is a fatal stream error). */
  maxFds: number;
  /** Rate limit for what the peer can make the channel log (default: one of its own). */
  logLimiter?: LogLimiter;
}

export interface ChannelHandlers {
  onMessage(message: Buffer, fds: ReceivedFds): void;
  onClose(reason: string): void;
}

/** A NativeChannel with received-fd tracking and a never-throwing send (a failed one closes the channel). */
export class Channel {
  readonly #log: Logger;
  readonly #handlers: ChannelHandlers;
  #channel: NativeChannel | undefined;
  /** fds received and not yet taken by a handler or closed. */
  readonly #held: HeldFds;
  #closed = false;

  /** Open a channel over the connected socket `fd` (ownership passes to the channel). */
  constructor(fd: number, options: ChannelOptions, handlers: ChannelHandlers, log: Logger) {
    this.#log = log;
    this.#handlers = handlers;
    this.#held = new HeldFds((f) => native.closeFd(f), options.logLimiter ?? new LogLimiter(log));
    this.#channel = native.openChannel(
      fd,
      { maxMessageSize: options.maxMessageSize, maxFds: options.maxFds },
      (message, fds) => {
        this.#held.add(fds);
        const received = new ReceivedFds(this.#held, fds);
        if (this.#closed) {
          received.release('channel closed');
          return;
        }
        handlers.onMessage(message, received);
      },
      (reason) => this.#fail(reason),
    );
  }

  /** Bytes queued and not yet taken by the kernel. */
  get pendingBytes(): number {
    return this.#channel?.pendingBytes ?? 0;
  }

  /**
   * Send a whole message (fds borrowed). Returns the bytes still queued after
   * it (pendingBytes: 0 when the kernel took everything), or -1 when the
   * channel is closed or the send fails; a failed send closes the channel and
   * calls onClose (synchronously) with the reason.
   */
  send(message: Uint8Array, fds?: readonly number[]): number {
    if (this.#closed || !this.#channel) return -1;
    try {
      return this.#channel.send(message, fds);
    } catch (err) {
      this.#fail(`send: ${err instanceof Error ? err.message : String(err)}`);
      return -1;
    }
  }

  /** Close the socket and every received fd still held. Idempotent; onClose is not called. */
  close(): void {
    if (this.#closed) return;
    this.#shutdown();
  }

  /** Number of received fds currently held open by this channel (for tests and leak checks). */
  get heldFds(): number {
    return this.#held.size;
  }

  /** The stream is gone (socket error, EOF, failed send): close everything and tell the owner once. */
  #fail(reason: string): void {
    if (this.#closed) return;
    this.#shutdown();
    this.#handlers.onClose(reason);
  }

  #shutdown(): void {
    this.#closed = true;
    const ch = this.#channel;
    this.#channel = undefined;
    try {
      ch?.close();
    } catch (err) {
      this.#log.warn({ err }, 'channel close failed');
    }
    this.#held.closeAll();
  }
}
