/**
 * Channel: one connected vfio-user stream (a NativeChannel) plus bookkeeping of
 * the fds that arrived with messages (received-fds.ts), so that none leaks:
 * fds a handler does not take are closed after it runs, and everything still
 * held is closed when the channel closes.
 */
import type { Logger } from 'pino';
import { native, type NativeChannel } from '../../native/index.js';
import { HeldFds, ReceivedFds } from './received-fds.js';

export interface ChannelHandlers {
  onMessage(message: Buffer, fds: ReceivedFds): void;
  onClose(reason: string): void;
}

/** A NativeChannel with received-fd tracking and a logged, never-throwing send. */
export class Channel {
  readonly #log: Logger;
  #channel: NativeChannel | undefined;
  /** fds received and not yet taken by a handler or closed. */
  readonly #held: HeldFds;
  #closed = false;

  /**
   * Open a channel over the connected socket `fd` (ownership passes to the channel).
   * `maxFds`: room for this many fds on one message (more is a fatal stream error).
   */
  constructor(fd: number, options: { maxMessageSize: number; maxFds: number }, handlers: ChannelHandlers, log: Logger) {
    this.#log = log;
    this.#held = new HeldFds((f) => native.closeFd(f), log);
    this.#channel = native.openChannel(
      fd,
      options,
      (message, fds) => {
        this.#held.add(fds);
        const received = new ReceivedFds(this.#held, fds);
        if (this.#closed) {
          received.release('channel closed');
          return;
        }
        handlers.onMessage(message, received);
      },
      (reason) => {
        if (this.#closed) return;
        this.#shutdown();
        handlers.onClose(reason);
      },
    );
  }

  /** Bytes queued and not yet taken by the kernel. */
  get pendingBytes(): number {
    return this.#channel?.pendingBytes ?? 0;
  }

  /**
   * Send a whole message (fds borrowed). Returns the bytes still queued after
   * it (pendingBytes: 0 when the kernel took everything), or -1 (and logs)
   * when the channel is closed or the send fails.
   */
  send(message: Uint8Array, fds?: readonly number[]): number {
    if (this.#closed || !this.#channel) return -1;
    try {
      return this.#channel.send(message, fds);
    } catch (err) {
      this.#log.warn({ err }, 'send failed');
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
