/**
 * VERSION, the client's first message: what it offers (QEMU 11.1's
 * capabilities by default) and the checks QEMU makes on the server's reply.
 */
import { Errno, VfioUserCommand } from '../protocol/constants.js';
import { formatCapabilities, type VersionCapabilities } from '../protocol/capabilities.js';
import { decodeVersion, encodeVersionRequest, type DecodedVersion } from '../protocol/version.js';
import { VfioUserClientError } from './errors.js';
import { closeFds, protocolError, type RequestChannel } from './request-channel.js';

/** QEMU 11.1's VERSION capabilities: what the client offers by default. */
export const QEMU_CAPABILITIES: Readonly<VersionCapabilities> = Object.freeze({
  maxMsgFds: 16,
  maxDataXferSize: 1 << 20,
  pgsizes: 4096,
  maxDmaMaps: 65535,
  writeMultiple: true,
  migration: { pgsize: 4096, maxBitmapSize: 268435456 },
});

/** The capabilities a client offers: `offered` merged over QEMU_CAPABILITIES (a string offers QEMU's). */
export function offeredCapabilities(offered: Partial<VersionCapabilities> | string | undefined): VersionCapabilities {
  return typeof offered === 'string' ? QEMU_CAPABILITIES : { ...QEMU_CAPABILITIES, ...offered };
}

/** The JSON text of VERSION: `offered` as given when it is a string, else offeredCapabilities(offered). */
export function versionJson(offered: Partial<VersionCapabilities> | string | undefined): string {
  return typeof offered === 'string' ? offered : formatCapabilities(offeredCapabilities(offered));
}

/**
 * Send VERSION and check the reply as QEMU does: no fds, no larger than the
 * request, major 0, a NUL-terminated JSON object (decodeVersion). EPROTO otherwise.
 */
export async function negotiate(
  ch: RequestChannel,
  version: { major: number; minor: number },
  json: string,
): Promise<DecodedVersion> {
  const id = ch.allocId();
  const request = encodeVersionRequest(id, { major: version.major, minor: version.minor, json });
  let reply;
  try {
    reply = ch.checked(await ch.sendAndWait(id, VfioUserCommand.VERSION, request, [], ch.timeoutMs));
  } catch (err) {
    // A device serves one client at a time; ours says so with EBUSY (docs/protocol.md).
    if (err instanceof VfioUserClientError && err.errno === Errno.EBUSY)
      throw new VfioUserClientError(
        err.errno,
        VfioUserCommand.VERSION,
        'VERSION refused: EBUSY (16): the device already has a client (one at a time)',
      );
    throw err;
  }
  closeFds(reply.fds);
  if (reply.fds.length > 0) throw protocolError(VfioUserCommand.VERSION, 'VERSION reply carried fds');
  if (reply.message.byteLength > request.byteLength) {
    throw protocolError(
      VfioUserCommand.VERSION,
      `VERSION reply of ${reply.message.byteLength} bytes is larger than the request (${request.byteLength})`,
    );
  }
  const decoded = decodeVersion(reply.message);
  if (decoded.major !== 0) throw protocolError(VfioUserCommand.VERSION, `server speaks major version ${decoded.major}`);
  return decoded;
}
