/**
 * A tiny raw vfio-user peer for the server tests: a NativeChannel on one end of
 * a socket, a queue of what arrives, and helpers to send requests and wait.
 */
import { native } from '../../native/index.js';
import { decodeHeader, type MessageHeader } from '../../protocol/index.js';

export interface Received {
  header: MessageHeader;
  msg: Buffer;
  fds: number[];
}

export class RawPeer {
  readonly #channel;
  readonly #queue: Received[] = [];
  #waiters: ((m: Received | undefined) => void)[] = [];
  closedReason: string | undefined;

  constructor(fd: number) {
    this.#channel = native.openChannel(
      fd,
      { maxMessageSize: (1 << 20) + 64, maxFds: 16 },
      (msg, fds) => {
        const r = { header: decodeHeader(msg), msg, fds };
        const w = this.#waiters.shift();
        if (w) w(r);
        else this.#queue.push(r);
      },
      (reason) => {
        this.closedReason = reason;
        for (const w of this.#waiters) w(undefined);
        this.#waiters = [];
      },
    );
  }

  static connect(path: string): RawPeer {
    return new RawPeer(native.connectUnix(path));
  }

  send(msg: Uint8Array, fds?: number[]): void {
    this.#channel.send(msg, fds);
  }

  /** The next message, or undefined when the stream closes first. Rejects after `ms`. */
  next(ms = 5000): Promise<Received | undefined> {
    const q = this.#queue.shift();
    if (q) return Promise.resolve(q);
    if (this.closedReason !== undefined) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== done);
        reject(new Error('no message in time'));
      }, ms);
      const done = (m: Received | undefined): void => {
        clearTimeout(timer);
        resolve(m);
      };
      this.#waiters.push(done);
    });
  }

  /** Send and wait for the next message. */
  async request(msg: Uint8Array, fds?: number[]): Promise<Received> {
    this.send(msg, fds);
    const r = await this.next();
    if (!r) throw new Error(`stream closed: ${this.closedReason}`);
    return r;
  }

  /** Resolves when the server closed the stream. */
  async waitClosed(ms = 5000): Promise<string> {
    for (;;) {
      if (this.closedReason !== undefined) return this.closedReason;
      await this.next(ms);
    }
  }

  close(): void {
    this.#channel.close();
  }
}
