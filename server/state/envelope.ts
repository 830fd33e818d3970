/**
 * The saved-state envelope: what `PciDevice.saveState()` returns, what a
 * migration sends in MIG_DATA_READ and takes in MIG_DATA_WRITE, and what a
 * hot reload or a live upgrade hands to the new code. Format version 1:
 *
 * | offset | bytes | what                                                     |
 * | ------ | ----- | -------------------------------------------------------- |
 * | 0      | 8     | magic, ASCII `VUTSSTAT`                                  |
 * | 8      | 2     | format version (u16) = 1                                 |
 * | 10     | 2     | flags (u16) = 0                                          |
 * | 12     | 4     | total length in bytes, this header and the CRC included  |
 * | 16     | ...   | sections: tag (4 ASCII bytes), length (u32), payload     |
 * | end-4  | 4     | CRC-32C of every byte before it                          |
 *
 * All integers little-endian. Each tag appears at most once; the reader names
 * the tags it knows and refuses any other (a newer format bumps the version).
 * Tags of format 1: `PCI ` (the library's state, server/pci/pci-state.ts),
 * `BARM` (memory-backed BAR contents), `DEV ` (the device's DeviceState,
 * server/state/device-state.ts).
 */
import { StateError } from './fields.js';
import { crc32c } from './crc32c.js';

const MAGIC = 'VUTSSTAT';
export const STATE_FORMAT_VERSION = 1;
/** Bytes of the header before the first section. */
export const ENVELOPE_HEADER_SIZE = 16;
const SECTION_HEADER_SIZE = 8;
const CRC_SIZE = 4;

/** Bytes an envelope holding sections of these payload sizes takes. */
export function envelopeSize(payloadSizes: readonly number[]): number {
  return ENVELOPE_HEADER_SIZE + payloadSizes.reduce((n, s) => n + SECTION_HEADER_SIZE + s, 0) + CRC_SIZE;
}

function checkTag(tag: string): void {
  if (!/^[\x20-\x7e]{4}$/.test(tag)) throw new RangeError(`state section tag '${tag}' must be 4 ASCII characters`);
}

/** Build an envelope of `sections` (in order). */
export function encodeEnvelope(sections: ReadonlyArray<readonly [tag: string, payload: Uint8Array]>): Uint8Array {
  const total = envelopeSize(sections.map(([, p]) => p.byteLength));
  if (total > 0xffffffff) throw new RangeError(`saved state of ${total} bytes is larger than 4 GiB`);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) out[i] = MAGIC.charCodeAt(i);
  dv.setUint16(8, STATE_FORMAT_VERSION, true);
  dv.setUint16(10, 0, true);
  dv.setUint32(12, total, true);
  let at = ENVELOPE_HEADER_SIZE;
  for (const [tag, payload] of sections) {
    checkTag(tag);
    for (let i = 0; i < 4; i++) out[at + i] = tag.charCodeAt(i);
    dv.setUint32(at + 4, payload.byteLength, true);
    out.set(payload, at + SECTION_HEADER_SIZE);
    at += SECTION_HEADER_SIZE + payload.byteLength;
  }
  dv.setUint32(at, crc32c(out.subarray(0, at)), true);
  return out;
}

/**
 * Check the first 16 bytes of an envelope (magic, format version, flags) and
 * return the total length it announces: how a receiver bounds a stream that
 * arrives in pieces before it holds all of it. StateError when they are wrong
 * or the length is outside [minimum, max].
 */
export function envelopeLength(header: Uint8Array, max: number): number {
  if (header.byteLength < ENVELOPE_HEADER_SIZE) throw new StateError('state: shorter than its header');
  for (let i = 0; i < 8; i++) {
    if (header[i] !== MAGIC.charCodeAt(i)) throw new StateError('state: not a vfio-user-ts saved state (bad magic)');
  }
  const dv = new DataView(header.buffer, header.byteOffset, ENVELOPE_HEADER_SIZE);
  const version = dv.getUint16(8, true);
  if (version !== STATE_FORMAT_VERSION) {
    throw new StateError(`state: format version ${version}, this library reads format version ${STATE_FORMAT_VERSION}`);
  }
  const flags = dv.getUint16(10, true);
  if (flags !== 0) throw new StateError(`state: unknown format flags 0x${flags.toString(16)}`);
  const total = dv.getUint32(12, true);
  if (total < ENVELOPE_HEADER_SIZE + CRC_SIZE) throw new StateError(`state: length ${total} is shorter than a header`);
  if (total > max) throw new StateError(`state: ${total} bytes, more than this device accepts (${max})`);
  return total;
}

/**
 * Decode a whole envelope: header, length, CRC, section bounds, no repeated
 * or unknown tag. Returns the payloads by tag (views into `bytes`).
 */
export function decodeEnvelope(bytes: Uint8Array, knownTags: readonly string[], max: number): Map<string, Uint8Array> {
  const total = envelopeLength(bytes, max);
  if (bytes.byteLength !== total) throw new StateError(`state: ${bytes.byteLength} bytes, its header says ${total}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = total - CRC_SIZE;
  if (dv.getUint32(end, true) !== crc32c(bytes.subarray(0, end)))
    throw new StateError('state: checksum mismatch (corrupted or truncated)');
  const sections = new Map<string, Uint8Array>();
  let at = ENVELOPE_HEADER_SIZE;
  while (at < end) {
    if (end - at < SECTION_HEADER_SIZE) throw new StateError(`state: ${end - at} stray bytes before the checksum`);
    const tag = String.fromCharCode(...bytes.subarray(at, at + 4));
    const length = dv.getUint32(at + 4, true);
    if (!knownTags.includes(tag)) throw new StateError(`state: unknown section '${tag}'`);
    if (sections.has(tag)) throw new StateError(`state: section '${tag}' twice`);
    if (length > end - at - SECTION_HEADER_SIZE)
      throw new StateError(`state: section '${tag}' of ${length} bytes runs past the end`);
    sections.set(tag, bytes.subarray(at + SECTION_HEADER_SIZE, at + SECTION_HEADER_SIZE + length));
    at += SECTION_HEADER_SIZE + length;
  }
  return sections;
}
