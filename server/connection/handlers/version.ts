/**
 * VERSION negotiation, server side. The reply is major 0, minor 0 and our
 * capabilities JSON, and is never longer than the client's request (QEMU reads
 * the reply into a buffer of the request's size and loses the stream otherwise):
 * optional keys are dropped until it fits.
 */
import {
  Errno,
  ProtocolError,
  decodeVersion,
  encodeVersionReply,
  formatCapabilities,
  type VersionCapabilities,
} from '../../../protocol/index.js';

export interface Negotiated {
  /** What the client announced (spec defaults for missing keys). */
  client: VersionCapabilities;
  /** The reply to send. */
  reply: Uint8Array;
  /** The capabilities JSON we sent ('' when none fit). */
  json: string;
}

/**
 * Validate a VERSION request (EINVAL: payload < 4, major ≠ 0, JSON not
 * NUL-terminated or malformed, bad capability values) and build the reply.
 *
 * `migration` is in `ours` only for a device that can migrate: the reply then
 * carries `"migration":{"pgsize":4096}`, as libvfio-user's does with
 * migration callbacks. For such a device a client's own `migration` must say
 * pgsize 4096 (libvfio-user: EINVAL otherwise); for any other device it is
 * accepted and ignored (QEMU 11.1 always sends the old v1 form).
 */
export function negotiateVersion(id: number, request: Uint8Array, ours: Partial<VersionCapabilities>): Negotiated {
  const v = decodeVersion(request);
  if (v.major !== 0) throw new ProtocolError(Errno.EINVAL, `VERSION: unsupported major ${v.major}.${v.minor}`);
  const clientPgsize = v.capabilities.migration?.pgsize;
  if (ours.migration && clientPgsize !== undefined && clientPgsize !== ours.migration.pgsize) {
    throw new ProtocolError(
      Errno.EINVAL,
      `VERSION: migration pgsize ${clientPgsize}, this device logs dirty pages at ${ours.migration.pgsize}`,
    );
  }
  // Budget: the request's size minus header (16), major/minor (4) and the NUL.
  const budget = request.byteLength - 16 - 4 - 1;
  let json = budget >= 2 ? formatCapabilities(ours, budget) : '';
  if (json.length > budget) json = '';
  return {
    client: v.capabilities,
    reply: encodeVersionReply(id, { major: 0, minor: 0, json }),
    json,
  };
}
