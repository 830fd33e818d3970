/**
 * StagedChannel: the JS half of the native channel's two staging buffers (see
 * native/src/channel.h), the NativeChannel that `native.openChannel` returns.
 * It keeps the public contract of openChannel/NativeChannel (native/types.ts).
 *
 * Why: on a small round trip the costliest JS-visible steps were creating a
 * Buffer in C++ for every received message (a new ArrayBuffer plus a
 * SetPrototype to Buffer.prototype) and, on send, V8 materializing the
 * ArrayBuffer of the small on-heap Uint8Array the reply was encoded into.
 *
 * Receive: each channel gets a private ArrayBuffer; the addon copies every
 * message that fits into it and calls back with the message's length. The
 * callback here copies those bytes into a fresh Buffer (its own ArrayBuffer,
 * byteOffset 0) before calling the user's onMessage, so `message` is still a
 * fresh Buffer owned by JS and `fds` a fresh array. Nothing else ever sees the
 * staging buffer: the addon writes it only right before that callback.
 *
 * Send: a Uint8Array of 1..SEND_STAGING_SIZE bytes is copied into the
 * channel's private send staging buffer and the addon's sendStaged sends from
 * there (it copies what the kernel does not take at once, as send does).
 * Anything else goes to the addon's send unchanged, so its errors are the same.
 */
import type {
  AddonBinding,
  AddonChannel,
  AddonChannelOptions,
  AddonMessageCallback,
  CloseCallback,
  MessageCallback,
  NativeChannel,
} from './types.js';

/** Bytes of the per-channel receive staging buffer: larger messages still arrive as native Buffers. */
export const RECEIVE_STAGING_SIZE = 64 * 1024;
/** Bytes of the per-channel send staging buffer: larger messages are handed to the addon as they are. */
export const SEND_STAGING_SIZE = 64 * 1024;

/** Below this many bytes a plain loop copies faster than TypedArray.prototype.set. */
const LOOP_COPY_MAX = 64;

/** A channel of the addon with its send staging buffer (made by openStagedChannel). */
class StagedChannel implements NativeChannel {
  readonly #channel: AddonChannel;
  readonly #tx: Uint8Array;

  constructor(channel: AddonChannel, tx: Uint8Array) {
    this.#channel = channel;
    this.#tx = tx;
  }

  send(message: Uint8Array, fds?: readonly number[]): number {
    const n = message instanceof Uint8Array ? message.length : 0;
    if (n === 0 || n > SEND_STAGING_SIZE) return this.#channel.send(message, fds);
    const tx = this.#tx;
    if (n <= LOOP_COPY_MAX) {
      for (let i = 0; i < n; i++) tx[i] = message[i]!;
    } else {
      tx.set(message);
    }
    return this.#channel.sendStaged(n, fds);
  }

  close(): void {
    this.#channel.close();
  }

  get closed(): boolean {
    return this.#channel.closed;
  }

  get pendingBytes(): number {
    return this.#channel.pendingBytes;
  }

  get fd(): number {
    return this.#channel.fd;
  }
}

/**
 * `addon.openChannel` with a receive and a send staging buffer: the contract
 * of NativeBinding.openChannel. Arguments a JS caller got wrong (options not
 * an object, onMessage not a function) reach the addon as they are, so its
 * TypeErrors/RangeErrors are the ones thrown.
 */
export function openStagedChannel(
  addon: AddonBinding,
  fd: number,
  options: { maxMessageSize: number; maxFds: number },
  onMessage: MessageCallback,
  onClose: CloseCallback,
): NativeChannel {
  const rx = new Uint8Array(RECEIVE_STAGING_SIZE);
  const tx = new Uint8Array(SEND_STAGING_SIZE);
  // Checked at run time, whatever the types say: what a JS caller got wrong goes to the addon as it is.
  const givenOptions: unknown = options;
  const givenOnMessage: unknown = onMessage;
  const staged: AddonChannelOptions =
    typeof givenOptions === 'object' && givenOptions !== null
      ? {
          maxMessageSize: options.maxMessageSize,
          maxFds: options.maxFds,
          receiveStaging: rx.buffer,
          sendStaging: tx.buffer,
        }
      : (givenOptions as AddonChannelOptions);
  const deliver: AddonMessageCallback =
    typeof givenOnMessage === 'function'
      ? (m, fds) => {
          let message: Buffer;
          if (typeof m === 'number') {
            message = Buffer.allocUnsafeSlow(m);
            if (m <= LOOP_COPY_MAX) {
              for (let i = 0; i < m; i++) message[i] = rx[i]!;
            } else {
              message.set(rx.subarray(0, m));
            }
          } else {
            message = m;
          }
          onMessage(message, fds ?? []);
        }
      : (givenOnMessage as AddonMessageCallback);
  return new StagedChannel(addon.openChannel(fd, staged, deliver, onClose), tx);
}
