/**
 * Channel: one connected vfio-user stream (a NativeChannel) plus bookkeeping of
 * the fds that arrived with messages, so that none leaks: fds a handler does
 * not take are closed after it runs, and everything still held is closed when
 * the channel closes.
 */
import type { Logger } from 'pino';
import type { NativeBinding, NativeChannel } from '../../native/index.js';

/** The fds that came with one message. Handlers `take` what they keep; the rest is closed by `release`. */
export class ReceivedFds {
  #fds: number[];
  #owner: Channel;

  constructor(owner: Channel, fds: number[]) {
    this.#owner = owner;
    this.#fds = fds;
  }

  /** How many fds are still held (not taken, not released). */
  get count(): number {
    return this.#fds.length;
  }

  /** Take ownership of every remaining fd (the caller must close them). */
  takeAll(): number[] {
    const out = this.#fds;
    this.#fds = [];
    this.#owner.forget(out);
    return out;
  }

  /** Take the first remaining fd, or undefined. */
  takeOne(): number | undefined {
    const fd = this.#fds.shift();
    if (fd !== undefined) this.#owner.forget([fd]);
    return fd;
  }

  /** Close every fd not taken. Returns how many were closed. Idempotent. */
  release(reason = 'unexpected'): number {
    const rest = this.#fds;
    this.#fds = [];
    for (const fd of rest) this.#owner.closeReceived(fd, reason);
    return rest.length;
  }
}

export interface ChannelHandlers {
  onMessage(message: Buffer, fds: ReceivedFds): void;
  onClose(reason: string): void;
}

/** A NativeChannel with received-fd tracking and a logged, never-throwing send. */
export class Channel {
  readonly #native: NativeBinding;
  readonly #log: Logger;
  #channel: NativeChannel | undefined;
  /** fds received and not yet taken by a handler or closed. */
  readonly #held = new Set<number>();
  #closed = false;

  /**
   * Open a channel over the connected socket `fd` (ownership passes to the channel).
   * `maxFds`: room for this many fds on one message (more is a fatal stream error).
   */
  constructor(native: NativeBinding, fd: number, options: { maxMessageSize: number; maxFds: number }, handlers: ChannelHandlers, log: Logger) {
    this.#native = native;
    this.#log = log;
    this.#channel = native.openChannel(
      fd,
      options,
      (message, fds) => {
        for (let i = 0; i < fds.length; i++) this.#held.add(fds[i]!);
        const received = new ReceivedFds(this, fds);
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

  get closed(): boolean {
    return this.#closed;
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

  /** @internal ReceivedFds gave these away. */
  forget(fds: readonly number[]): void {
    for (const f of fds) this.#held.delete(f);
  }

  /** @internal Close a received fd nobody took. */
  closeReceived(fd: number, reason: string): void {
    if (!this.#held.delete(fd)) return;
    this.#log.debug({ fd, reason }, 'closing received fd');
    this.#closeFd(fd);
  }

  #closeFd(fd: number): void {
    try {
      this.#native.closeFd(fd);
    } catch (err) {
      this.#log.warn({ err, fd }, 'close of a received fd failed');
    }
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
    for (const fd of this.#held) this.#closeFd(fd);
    this.#held.clear();
  }
}
