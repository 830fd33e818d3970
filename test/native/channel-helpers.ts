/** Small helpers shared by the native channel tests (not a test file itself). */
import { native, type NativeChannel } from '../../native/index.js';

/** A vfio-user-shaped message: 16-byte header (msg_id at 0, size at 4) plus `body` bytes filled with `fill`. */
export function message(id: number, bodyLength = 0, fill = id & 0xff): Buffer {
  const buf = Buffer.alloc(16 + bodyLength, fill);
  buf.writeUInt16LE(id, 0);
  buf.writeUInt16LE(0, 2);
  buf.writeUInt32LE(16 + bodyLength, 4);
  buf.writeUInt32LE(0, 8);
  buf.writeUInt32LE(0, 12);
  return buf;
}

export interface Received {
  message: Buffer;
  fds: number[];
}

/** A channel that records what it receives, with promises to wait on. */
export class Recorder {
  readonly messages: Received[] = [];
  closeReasons: string[] = [];
  readonly channel: NativeChannel;
  private waiters: Array<() => void> = [];

  constructor(fd: number, options = { maxMessageSize: 1 << 20, maxFds: 8 }) {
    this.channel = native.openChannel(
      fd,
      options,
      (message, fds) => {
        this.messages.push({ message, fds });
        this.wake();
      },
      (reason) => {
        this.closeReasons.push(reason);
        this.wake();
      },
    );
  }

  /** Resolves once `predicate` holds (checked after every event). */
  until(predicate: () => boolean, what = 'condition'): Promise<void> {
    if (predicate()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 10_000);
      const check = () => {
        if (predicate()) {
          clearTimeout(timer);
          resolve();
        } else {
          this.waiters.push(check);
        }
      };
      this.waiters.push(check);
    });
  }

  messagesReceived(n: number): Promise<void> {
    return this.until(() => this.messages.length >= n, `${n} messages`);
  }

  closed(): Promise<void> {
    return this.until(() => this.closeReasons.length > 0, 'onClose');
  }

  /** Closes every fd received so far and the channel. */
  dispose(): void {
    for (const m of this.messages) for (const fd of m.fds) native.closeFd(fd);
    for (const m of this.messages) m.fds.length = 0;
    this.channel.close();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

/** Next macrotask turn (lets the event loop poll). */
export function turn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
