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

/** A DataView over exactly the bytes of `bytes`. */
export function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decode the header of `msg` (which must hold at least 16 bytes: EINVAL otherwise). */
export function decodeHeader(msg: Uint8Array): MessageHeader {
  if (msg.byteLength < HEADER_SIZE) {
    throw ProtocolError.invalid(`message of ${msg.byteLength} bytes is shorter than the header`);
  }
  const dv = dataView(msg);
  return {
    id: dv.getUint16(0, true),
    command: dv.getUint16(2, true),
    size: dv.getUint32(4, true),
    flags: dv.getUint32(8, true),
    error: dv.getUint32(12, true),
  };
}

/** Write `h` into the first 16 bytes of `dv`. */
export function writeHeader(dv: DataView, h: MessageHeader): void {
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
export function isCommand(h: MessageHeader): boolean {
  return messageType(h.flags) === HeaderFlag.TYPE_COMMAND;
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
  view: DataView;
}

/** Allocate a message of HEADER_SIZE + payloadSize bytes with its header written. */
export function newMessage(id: number, command: number, flags: number, payloadSize: number, error = 0): NewMessage {
  const size = HEADER_SIZE + payloadSize;
  const bytes = new Uint8Array(size);
  const view = dataView(bytes);
  writeHeader(view, { id, command, size, flags, error });
  return { bytes, view };
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
  return newMessage(id, command, HeaderFlag.TYPE_REPLY | HeaderFlag.ERROR, 0, errno).bytes;
}

/** Header-only reply (DMA_MAP, SET_IRQS, DEVICE_RESET, MIG_DATA_WRITE, ...). */
export function encodeEmptyReply(id: number, command: number): Uint8Array {
  return newReply(id, command, 0).bytes;
}

/** Header-only request (DEVICE_RESET). */
export function encodeEmptyRequest(id: number, command: number, noReply = false): Uint8Array {
  return newRequest(id, command, 0, noReply).bytes;
}

/** Payload length of a whole message (bytes after the header). */
export function payloadLength(msg: Uint8Array): number {
  return msg.byteLength - HEADER_SIZE;
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

/** Throw EINVAL unless the payload of `msg` is exactly `n` bytes. */
export function requireExactPayload(msg: Uint8Array, n: number, what: number | string): DataView {
  const len = msg.byteLength - HEADER_SIZE;
  if (len !== n) {
    const name = typeof what === 'number' ? commandName(what) : what;
    throw ProtocolError.invalid(`${name}: payload of ${len < 0 ? 0 : len} bytes, expected ${n}`);
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
