/**
 * The JS half of the native channel's receive and send windows (see
 * native/src/channel.h). `withChannelWindows(binding)` is what native/index.ts
 * exports as `native`; the public contract of openChannel/NativeChannel is
 * unchanged by it.
 *
 * Why: on a small round trip the costliest JS-visible steps were creating a
 * Buffer in C++ for every received message (a new ArrayBuffer plus a
 * SetPrototype to Buffer.prototype) and, on send, V8 materializing the
 * ArrayBuffer of the small on-heap Uint8Array the reply was encoded into.
 *
 * Receive: each channel gets a private ArrayBuffer; the addon copies every
 * message that fits into it and calls back with the message's length. The
 * wrapper copies those bytes into a fresh Buffer (its own ArrayBuffer,
 * byteOffset 0) before calling the user's onMessage, so `message` is still a
 * fresh Buffer owned by JS and `fds` a fresh array. Nothing else ever sees the
 * window: the addon writes it only right before that callback.
 *
 * Send: a Uint8Array of 1..SEND_WINDOW_SIZE bytes is copied into the channel's
 * private send window and the addon's sendFromWindow sends from there (it
 * copies what the kernel does not take at once, as before). Anything else goes
 * to the addon's send unchanged, so its errors are the same.
 */
import type { CloseCallback, MessageCallback, NativeBinding, NativeChannel } from './index.js';

/** Bytes of the per-channel receive window: larger messages still arrive as native Buffers. */
export const RECEIVE_WINDOW_SIZE = 64 * 1024;
/** Bytes of the per-channel send window: larger messages are handed to the addon as they are. */
export const SEND_WINDOW_SIZE = 64 * 1024;

/** Below this many bytes a plain loop copies faster than TypedArray.prototype.set. */
const LOOP_COPY_MAX = 64;

/** The addon's raw callback when a receive window is given: a length (bytes in the window) or a Buffer; fds undefined if none. */
type RawMessageCallback = (message: number | Buffer, fds: number[] | undefined) => void;

interface RawChannel extends NativeChannel {
  /** Send the first `length` bytes of the send window (absent in an addon built before the windows). */
  sendFromWindow?: (length: number, fds?: readonly number[]) => number;
}

type RawOpenChannel = (
  fd: number,
  options: { maxMessageSize: number; maxFds: number; receiveWindow?: ArrayBuffer; sendWindow?: ArrayBuffer },
  onMessage: RawMessageCallback | MessageCallback,
  onClose: CloseCallback,
) => RawChannel;

/**
 * `binding` with an `openChannel` that uses a receive and a send window (same
 * signature and contract as the raw one; invalid arguments reach the addon
 * unchanged, so its TypeErrors/RangeErrors are the same).
 */
export function withChannelWindows(binding: NativeBinding): NativeBinding {
  const open = binding.openChannel as unknown as RawOpenChannel;
  const openChannel: NativeBinding['openChannel'] = (fd, options, onMessage, onClose) => {
    if (typeof options !== 'object' || options === null || typeof onMessage !== 'function') {
      return open.call(binding, fd, options, onMessage, onClose);
    }
    const rx = new Uint8Array(RECEIVE_WINDOW_SIZE);
    const tx = new Uint8Array(SEND_WINDOW_SIZE);
    const deliver: RawMessageCallback = (m, fds) => {
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
    };
    const channel = open.call(
      binding,
      fd,
      { maxMessageSize: options.maxMessageSize, maxFds: options.maxFds, receiveWindow: rx.buffer, sendWindow: tx.buffer },
      deliver,
      onClose,
    );
    const rawSend = channel.send;
    const fromWindow = channel.sendFromWindow;
    let send: (message: Uint8Array, fds?: readonly number[]) => number;
    if (typeof fromWindow !== 'function') {
      // An addon built before the windows ignores them: it delivers Buffers (handled above) and its send returns nothing.
      send = (message, fds) => {
        const r = rawSend.call(channel, message, fds) as unknown;
        return typeof r === 'number' ? r : channel.pendingBytes;
      };
    } else {
      send = (message, fds) => {
        const n = message instanceof Uint8Array ? message.length : 0;
        if (n === 0 || n > SEND_WINDOW_SIZE) return rawSend.call(channel, message, fds);
        if (n <= LOOP_COPY_MAX) {
          for (let i = 0; i < n; i++) tx[i] = message[i]!;
        } else {
          tx.set(message);
        }
        return fromWindow.call(channel, n, fds);
      };
    }
    Object.defineProperty(channel, 'send', { value: send, writable: true, configurable: true });
    return channel;
  };
  return { ...binding, openChannel };
}
