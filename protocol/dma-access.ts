/**
 * DMA_READ (11) and DMA_WRITE (12): server-to-client access to client memory
 * that was mapped without an fd. Spec layout (what QEMU 11.1 uses):
 * request addr u64 @0, count u64 @8 [, data @16 for WRITE];
 * READ reply: addr, count, data @16; WRITE reply: addr, count (32-byte message).
 */
import { VfioUserCommand, commandName } from './constants.js';
import { ProtocolError } from './errors.js';
import { newReply, newRequest, requirePayload, type NewMessage } from './header.js';

const DMA_ACCESS_SIZE = 16;

export interface DmaAccessMessage {
  addr: bigint;
  count: bigint;
}

export interface DmaAccessWithData extends DmaAccessMessage {
  /** A view into the message. */
  data: Uint8Array;
}

export function encodeDmaReadRequest(id: number, addr: bigint, count: number): Uint8Array {
  const m = newRequest(id, VfioUserCommand.DMA_READ, DMA_ACCESS_SIZE);
  m.view.setBigUint64(16, addr, true);
  m.view.setBigUint64(24, BigInt(count), true);
  return m.bytes;
}

/** EINVAL if the payload is shorter than 16 bytes. */
export function decodeDmaReadRequest(msg: Uint8Array): DmaAccessMessage {
  const dv = requirePayload(msg, DMA_ACCESS_SIZE, VfioUserCommand.DMA_READ);
  return { addr: dv.getBigUint64(16, true), count: dv.getBigUint64(24, true) };
}

/** Fill a message made for `data`: addr, count = data.length, then the data. */
function withData(m: NewMessage, addr: bigint, data: Uint8Array): Uint8Array {
  m.view.setBigUint64(16, addr, true);
  m.view.setBigUint64(24, BigInt(data.byteLength), true);
  m.bytes.set(data, 32);
  return m.bytes;
}

/** addr, count and the data after them; EINVAL if shorter than 16 bytes or the data length is not count. */
function decodeWithData(msg: Uint8Array, what: number | string): DmaAccessWithData {
  const dv = requirePayload(msg, DMA_ACCESS_SIZE, what);
  const count = dv.getBigUint64(24, true);
  const data = msg.subarray(32);
  if (BigInt(data.byteLength) !== count) {
    const name = typeof what === 'number' ? commandName(what) : what;
    throw ProtocolError.invalid(`${name}: count ${count} but ${data.byteLength} bytes`);
  }
  return { addr: dv.getBigUint64(16, true), count, data };
}

export function encodeDmaReadReply(id: number, addr: bigint, data: Uint8Array): Uint8Array {
  return withData(newReply(id, VfioUserCommand.DMA_READ, DMA_ACCESS_SIZE + data.byteLength), addr, data);
}

/** EINVAL if shorter than 16 bytes or the data length is not count. */
export function decodeDmaReadReply(msg: Uint8Array): DmaAccessWithData {
  return decodeWithData(msg, 'DMA_READ reply');
}

export function encodeDmaWriteRequest(id: number, addr: bigint, data: Uint8Array): Uint8Array {
  return withData(newRequest(id, VfioUserCommand.DMA_WRITE, DMA_ACCESS_SIZE + data.byteLength), addr, data);
}

/** EINVAL if shorter than 16 bytes or the data length is not count. */
export function decodeDmaWriteRequest(msg: Uint8Array): DmaAccessWithData {
  return decodeWithData(msg, VfioUserCommand.DMA_WRITE);
}

export function encodeDmaWriteReply(id: number, addr: bigint, count: number): Uint8Array {
  const m = newReply(id, VfioUserCommand.DMA_WRITE, DMA_ACCESS_SIZE);
  m.view.setBigUint64(16, addr, true);
  m.view.setBigUint64(24, BigInt(count), true);
  return m.bytes;
}

/** Accepts the spec's 32-byte reply; a header-only reply (older QEMU) decodes as addr = count = undefined. */
export function decodeDmaWriteReply(msg: Uint8Array): Partial<DmaAccessMessage> {
  if (msg.byteLength === 16) return {};
  const dv = requirePayload(msg, DMA_ACCESS_SIZE, 'DMA_WRITE reply');
  return { addr: dv.getBigUint64(16, true), count: dv.getBigUint64(24, true) };
}
