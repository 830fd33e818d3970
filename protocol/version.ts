/**
 * VERSION (command 1), both directions: major u16 @0, minor u16 @2, then an
 * optional NUL-terminated JSON capabilities text @4.
 */
import { VfioUserCommand, Errno } from './constants.js';
import { ProtocolError } from './errors.js';
import { newReply, newRequest, requirePayload } from './header.js';
import { parseCapabilities, type VersionCapabilities } from './capabilities.js';

export interface VersionMessage {
  major: number;
  minor: number;
  /** The JSON text without its NUL ('' when absent). */
  json: string;
}

export interface DecodedVersion extends VersionMessage {
  /** The parsed, validated capabilities (spec defaults for missing keys). */
  capabilities: VersionCapabilities;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

function encode(msg: VersionMessage, make: (payload: number) => ReturnType<typeof newReply>): Uint8Array {
  const json = msg.json.length > 0 ? utf8.encode(msg.json) : undefined;
  const m = make(4 + (json ? json.byteLength + 1 : 0));
  m.view.setUint16(16, msg.major, true);
  m.view.setUint16(18, msg.minor, true);
  if (json) m.bytes.set(json, 20); // the NUL is already there (zeroed)
  return m.bytes;
}

export function encodeVersionRequest(id: number, msg: VersionMessage): Uint8Array {
  return encode(msg, (n) => newRequest(id, VfioUserCommand.VERSION, n));
}

export function encodeVersionReply(id: number, msg: VersionMessage): Uint8Array {
  return encode(msg, (n) => newReply(id, VfioUserCommand.VERSION, n));
}

/**
 * Decode a VERSION request or reply. EINVAL when: payload < 4; JSON present but
 * not NUL-terminated (the NUL must be the last byte), not UTF-8, not valid JSON
 * or with wrong types. Major/minor are returned as is (the caller checks them).
 */
export function decodeVersion(msg: Uint8Array): DecodedVersion {
  const dv = requirePayload(msg, 4, VfioUserCommand.VERSION);
  const major = dv.getUint16(16, true);
  const minor = dv.getUint16(18, true);
  let json = '';
  if (msg.byteLength > 20) {
    if (msg[msg.byteLength - 1] !== 0) throw new ProtocolError(Errno.EINVAL, 'VERSION: JSON is not NUL-terminated');
    const body = msg.subarray(20, msg.byteLength - 1);
    if (body.includes(0)) throw new ProtocolError(Errno.EINVAL, 'VERSION: NUL inside the JSON');
    try {
      json = utf8Decoder.decode(body);
    } catch {
      throw new ProtocolError(Errno.EINVAL, 'VERSION: JSON is not UTF-8');
    }
  }
  return { major, minor, json, capabilities: parseCapabilities(json) };
}
