/**
 * Turning a client away with a reason it can read: the device already has a
 * client, so instead of closing the socket under it (the client would see
 * only ECONNRESET or EOF), we answer its first message (VERSION, from QEMU)
 * with an error reply carrying `errno` (EBUSY), then close. QEMU's realize
 * then fails with "version reply: Device or resource busy"; our client
 * rejects with VfioUserClientError EBUSY.
 *
 * It reads one message at most, never attaches anything and closes within
 * `timeoutMs` whatever the client does (sends nothing, sends garbage, sends
 * fds: they are closed with the channel).
 */
import type { Logger } from 'pino';
import { native } from '../../native/index.js';
import { HEADER_SIZE, decodeHeader, encodeErrorReply, wantsReply } from '../../protocol/index.js';
import { Channel } from '../transport/index.js';

/** A VERSION request is about 200 bytes; anything larger than this is not one we answer. */
const MAX_MESSAGE = 4096;

/** Answer the first message on `fd` (ownership passes) with `errno`, then close it. */
export function turnAway(fd: number, errno: number, log: Logger, timeoutMs = 1000): void {
  let done = false;
  let channel: Channel | undefined;
  const finish = (): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    // Give the 16-byte reply a moment to reach the kernel (it nearly always went out at once).
    const close = (tries: number): void => {
      if (channel && channel.pendingBytes > 0 && tries < 10) setTimeout(() => close(tries + 1), 10);
      else channel?.close();
    };
    close(0);
  };
  const timer = setTimeout(finish, timeoutMs);
  timer.unref();
  try {
    channel = new Channel(
      fd,
      { maxMessageSize: MAX_MESSAGE, maxFds: 16 },
      {
        onMessage: (message, fds) => {
          fds.release('client turned away');
          if (done) return;
          if (message.byteLength >= HEADER_SIZE) {
            const header = decodeHeader(message);
            if (wantsReply(header)) channel?.send(encodeErrorReply(header.id, header.command, errno));
          }
          finish();
        },
        onClose: () => {
          done = true;
          clearTimeout(timer);
        },
      },
      log,
    );
  } catch (err) {
    clearTimeout(timer);
    log.debug({ err }, 'turning a client away: cannot open its socket; closing it');
    try {
      native.closeFd(fd);
    } catch {
      // The channel took it already.
    }
  }
}
