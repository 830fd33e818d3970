/**
 * The 16-byte vfio-user message header and the byte-level helpers every message
 * codec uses. All integers are little-endian (host order on x86-64/aarch64).
 */
import { HEADER_SIZE, HeaderFlag, commandName } from './constants.js';
import { ProtocolError } from './errors.js';

export interface MessageHeader {
  /** Echoed in the reply. */
  id: number;
  command: number;
  /** Whole message size, header included. */
  size: number;
  /** HeaderFlag bits: type (COMMAND/REPLY), NO_REPLY, ERROR. */
  flags: number;
  /** Positive errno; meaningful in a reply with ERROR set. */
  error: number;
}

/**
 * A DataView over exactly the bytes of `bytes`.
 * Hot paths avoid it: on Node 20 `new DataView` is a slow C++ builtin, and on a
 * small (on-heap) Uint8Array `.buffer` makes V8 move its bytes off-heap first.
 * The readU32/writeU32 family below works on the bytes directly.
 */
export function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Little-endian u16 at byte `o` of `b` (the caller checked the bounds). */
function readU16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

/** Little-endian u32 at byte `o` of `b` (the caller checked the bounds). */
export function readU32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

/** Little-endian u64 at byte `o` of `b` (the caller checked the bounds). */
export function readU64(b: Uint8Array, o: number): bigint {
  const lo = readU32(b, o);
  const hi = readU32(b, o + 4);
  return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

/** Store `v` (taken mod 2^16) little-endian at byte `o` of `b`. */
function writeU16(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
}

/** Store `v` (taken mod 2^32) little-endian at byte `o` of `b`. */
export function writeU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
}

/** Store `v` (taken mod 2^64, like DataView.setBigUint64) little-endian at byte `o` of `b`. */
export function writeU64(b: Uint8Array, o: number, v: bigint): void {
  if (v >= 0n && v <= 0xffffffffn) {
    writeU32(b, o, Number(v));
    writeU32(b, o + 4, 0);
  } else {
    writeU32(b, o, Number(v & 0xffffffffn));
    writeU32(b, o + 4, Number((v >> 32n) & 0xffffffffn));
  }
}

/** Decode the header of `msg` (which must hold at least 16 bytes: EINVAL otherwise). */
export function decodeHeader(msg: Uint8Array): MessageHeader {
  if (msg.byteLength < HEADER_SIZE) {
    throw ProtocolError.invalid(`message of ${msg.byteLength} bytes is shorter than the header`);
  }
  return {
    id: readU16(msg, 0),
    command: readU16(msg, 2),
    size: readU32(msg, 4),
    flags: readU32(msg, 8),
    error: readU32(msg, 12),
  };
}

/** Write the header fields into the first 16 bytes of `b` (no DataView). */
function writeHeaderBytes(
  b: Uint8Array,
  id: number,
  command: number,
  size: number,
  flags: number,
  error: number,
): void {
  writeU16(b, 0, id & 0xffff);
  writeU16(b, 2, command & 0xffff);
  writeU32(b, 4, size >>> 0);
  writeU32(b, 8, flags >>> 0);
  writeU32(b, 12, error >>> 0);
}

/** Write `h` into the first 16 bytes of `dv`. */
function writeHeader(dv: DataView, h: MessageHeader): void {
  dv.setUint16(0, h.id & 0xffff, true);
  dv.setUint16(2, h.command & 0xffff, true);
  dv.setUint32(4, h.size >>> 0, true);
  dv.setUint32(8, h.flags >>> 0, true);
  dv.setUint32(12, h.error >>> 0, true);
}

/** Encode a header alone into a fresh 16-byte array. */
export function encodeHeader(h: MessageHeader): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  writeHeader(dataView(out), h);
  return out;
}

/** The message type bits of `flags` (HeaderFlag.TYPE_COMMAND or TYPE_REPLY; anything else is invalid). */
export function messageType(flags: number): number {
  return flags & HeaderFlag.TYPE_MASK;
}
export function isReply(h: MessageHeader): boolean {
  return messageType(h.flags) === HeaderFlag.TYPE_REPLY;
}
export function wantsReply(h: MessageHeader): boolean {
  return (h.flags & HeaderFlag.NO_REPLY) === 0;
}
export function isError(h: MessageHeader): boolean {
  return (h.flags & HeaderFlag.ERROR) !== 0;
}

/** A fresh message: header filled, payload zeroed. `view` covers the whole message. */
export interface NewMessage {
  bytes: Uint8Array;
  /** Created on first use (see dataView: hot encoders write `bytes` directly). */
  view: DataView;
}

class FreshMessage implements NewMessage {
  readonly bytes: Uint8Array;
  #view: DataView | undefined;

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }

  get view(): DataView {
    return (this.#view ??= dataView(this.bytes));
  }
}

/** A fresh Uint8Array of HEADER_SIZE + payloadSize bytes with its header written (payload zeroed). */
export function newMessageBytes(
  id: number,
  command: number,
  flags: number,
  payloadSize: number,
  error = 0,
): Uint8Array {
  const size = HEADER_SIZE + payloadSize;
  const bytes = new Uint8Array(size);
  writeHeaderBytes(bytes, id, command, size, flags, error);
  return bytes;
}

/** Allocate a message of HEADER_SIZE + payloadSize bytes with its header written. */
export function newMessage(id: number, command: number, flags: number, payloadSize: number, error = 0): NewMessage {
  return new FreshMessage(newMessageBytes(id, command, flags, payloadSize, error));
}

/** A command (request) message with `payloadSize` zeroed bytes after the header. */
export function newRequest(id: number, command: number, payloadSize: number, noReply = false): NewMessage {
  return newMessage(id, command, HeaderFlag.TYPE_COMMAND | (noReply ? HeaderFlag.NO_REPLY : 0), payloadSize);
}

/** A success reply message with `payloadSize` zeroed bytes after the header. */
export function newReply(id: number, command: number, payloadSize: number): NewMessage {
  return newMessage(id, command, HeaderFlag.TYPE_REPLY, payloadSize);
}

/** An error reply: the header alone with REPLY|ERROR and the errno. */
export function encodeErrorReply(id: number, command: number, errno: number): Uint8Array {
  return newMessageBytes(id, command, HeaderFlag.TYPE_REPLY | HeaderFlag.ERROR, 0, errno);
}

/** Header-only reply (DMA_MAP, SET_IRQS, DEVICE_RESET, MIG_DATA_WRITE, ...). */
export function encodeEmptyReply(id: number, command: number): Uint8Array {
  return newMessageBytes(id, command, HeaderFlag.TYPE_REPLY, 0);
}

/** Header-only request (DEVICE_RESET). */
export function encodeEmptyRequest(id: number, command: number, noReply = false): Uint8Array {
  return newMessageBytes(id, command, HeaderFlag.TYPE_COMMAND | (noReply ? HeaderFlag.NO_REPLY : 0), 0);
}

/** Throw EINVAL unless the payload of `msg` has at least `min` bytes. Returns a view of the whole message. */
export function requirePayload(msg: Uint8Array, min: number, what: number | string): DataView {
  const len = msg.byteLength - HEADER_SIZE;
  if (len < min) {
    const name = typeof what === 'number' ? commandName(what) : what;
    throw ProtocolError.invalid(`${name}: payload of ${len < 0 ? 0 : len} bytes, need at least ${min}`);
  }
  return dataView(msg);
}

/** Hex dump (for trace logs); long messages are cut after `max` bytes. */
export function hexDump(bytes: Uint8Array, max = 256): string {
  const n = Math.min(bytes.byteLength, max);
  let s = '';
  for (let i = 0; i < n; i++) s += (i && i % 16 === 0 ? '\n' : i ? ' ' : '') + bytes[i]!.toString(16).padStart(2, '0');
  return n < bytes.byteLength ? `${s} ... (${bytes.byteLength} bytes)` : s;
}
