/**
 * The JS half of the native channel's receive window (see native/src/channel.h).
 *
 * Creating a Buffer in C++ (napi_create_buffer_copy: a new ArrayBuffer plus a
 * SetPrototype to Buffer.prototype) was the costliest step of delivering a
 * small message. Instead, each channel opened through `native.openChannel`
 * gets a private ArrayBuffer (the window); the addon copies every message that
 * fits into it and calls back with the message's length. The wrapper below
 * copies those bytes into a fresh Buffer (its own ArrayBuffer, byteOffset 0)
 * before calling the user's onMessage, so the public contract is unchanged:
 * `message` is a fresh Buffer owned by JS, `fds` a fresh array.
 *
 * The window is only written by the addon while it delivers a message, and
 * the copy happens first thing in the callback, so nothing else ever sees it.
 */
import type { CloseCallback, MessageCallback, NativeBinding, NativeChannel } from './index.js';

/** Bytes of the per-channel window: larger messages still arrive as native Buffers. */
export const RECEIVE_WINDOW_SIZE = 64 * 1024;

/** The addon's raw callback when a window is given: a length (bytes are in the window) or a Buffer; fds undefined if none. */
type RawMessageCallback = (message: number | Buffer, fds: number[] | undefined) => void;

type RawOpenChannel = (
  fd: number,
  options: { maxMessageSize: number; maxFds: number; receiveWindow?: ArrayBuffer },
  onMessage: RawMessageCallback | MessageCallback,
  onClose: CloseCallback,
) => NativeChannel;

/**
 * `binding` with an `openChannel` that delivers small messages through a
 * receive window (same signature and contract as the raw one; bad arguments
 * reach the addon unchanged, so its TypeErrors/RangeErrors are the same).
 */
export function withReceiveWindow(binding: NativeBinding): NativeBinding {
  const open = binding.openChannel as unknown as RawOpenChannel;
  const openChannel: NativeBinding['openChannel'] = (fd, options, onMessage, onClose) => {
    if (typeof options !== 'object' || options === null || typeof onMessage !== 'function') {
      return open.call(binding, fd, options, onMessage, onClose);
    }
    const window = new Uint8Array(RECEIVE_WINDOW_SIZE);
    const deliver: RawMessageCallback = (m, fds) => {
      let message: Buffer;
      if (typeof m === 'number') {
        message = Buffer.allocUnsafeSlow(m);
        if (m <= 64) {
          for (let i = 0; i < m; i++) message[i] = window[i]!;
        } else {
          message.set(window.subarray(0, m));
        }
      } else {
        message = m;
      }
      onMessage(message, fds ?? []);
    };
    return open.call(
      binding,
      fd,
      { maxMessageSize: options.maxMessageSize, maxFds: options.maxFds, receiveWindow: window.buffer },
      deliver,
      onClose,
    );
  };
  return { ...binding, openChannel };
}
