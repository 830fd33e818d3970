/**
 * MIG_DATA_READ (17) and MIG_DATA_WRITE (18): the device state stream of a migration.
 *
 * MIG_DATA_READ: argsz u32, size u32; reply argsz, size, data @8.
 * MIG_DATA_WRITE: argsz u32, size u32, data @8; reply: header only.
 *
 * A MIG_DATA_READ reply whose `size` is less than the size asked for ends the
 * stream. libvfio-user always sends 8 + the size asked for, zero-padded past
 * `size` (argsz and size say how many bytes are valid), and libvfio-user's
 * sample client reads exactly that many: the encoder can pad the same way, and
 * the decoder takes the first `size` bytes of whatever follows.
 */
import { VfioUserCommand } from './constants.js';
import { ProtocolError } from './errors.js';
import { newReply, newRequest, requirePayload, type NewMessage } from './header.js';

/** Bytes of argsz + size before the data. */
export const MIG_DATA_SIZE = 8;

export interface MigDataMessage {
  argsz: number;
  size: number;
  /** A view into the message (empty in a MIG_DATA_READ request). */
  data: Uint8Array;
}

export function encodeMigDataReadRequest(id: number, size: number, argsz = MIG_DATA_SIZE + size): Uint8Array {
  const m = newRequest(id, VfioUserCommand.MIG_DATA_READ, MIG_DATA_SIZE);
  m.view.setUint32(16, argsz >>> 0, true);
  m.view.setUint32(20, size >>> 0, true);
  return m.bytes;
}

/** EINVAL if the payload is not exactly 8 bytes. */
export function decodeMigDataReadRequest(msg: Uint8Array): { argsz: number; size: number } {
  const dv = requirePayload(msg, MIG_DATA_SIZE, VfioUserCommand.MIG_DATA_READ);
  if (msg.byteLength !== 16 + MIG_DATA_SIZE) throw ProtocolError.invalid('MIG_DATA_READ: request carries data');
  return { argsz: dv.getUint32(16, true), size: dv.getUint32(20, true) };
}

/** Fill a MIG_DATA message made for at least `data`: argsz = 8 + data.length, size = data.length, then the data. */
function withMigData(m: NewMessage, data: Uint8Array): Uint8Array {
  m.view.setUint32(16, MIG_DATA_SIZE + data.byteLength, true);
  m.view.setUint32(20, data.byteLength, true);
  m.bytes.set(data, 24);
  return m.bytes;
}

/**
 * Reply: argsz = 8 + data.length, size = data.length (short = end of stream).
 * With `padTo` (>= data.length), the payload carries padTo data bytes, zeroes after `data`.
 */
export function encodeMigDataReadReply(id: number, data: Uint8Array, padTo = data.byteLength): Uint8Array {
  const room = Math.max(padTo, data.byteLength);
  return withMigData(newReply(id, VfioUserCommand.MIG_DATA_READ, MIG_DATA_SIZE + room), data);
}

/** EINVAL if shorter than 8 bytes, or size is more than the data bytes present (padding after them is allowed). */
export function decodeMigDataReadReply(msg: Uint8Array): MigDataMessage {
  const dv = requirePayload(msg, MIG_DATA_SIZE, 'MIG_DATA_READ reply');
  const size = dv.getUint32(20, true);
  const present = msg.byteLength - 24;
  if (size > present) throw ProtocolError.invalid(`MIG_DATA_READ reply: size ${size} but ${present} bytes`);
  return { argsz: dv.getUint32(16, true), size, data: msg.subarray(24, 24 + size) };
}

export function encodeMigDataWriteRequest(id: number, data: Uint8Array): Uint8Array {
  return withMigData(newRequest(id, VfioUserCommand.MIG_DATA_WRITE, MIG_DATA_SIZE + data.byteLength), data);
}

/** EINVAL if shorter than 8 bytes or size differs from the data length. */
export function decodeMigDataWriteRequest(msg: Uint8Array): MigDataMessage {
  const dv = requirePayload(msg, MIG_DATA_SIZE, VfioUserCommand.MIG_DATA_WRITE);
  const size = dv.getUint32(20, true);
  const data = msg.subarray(24);
  if (data.byteLength !== size)
    throw ProtocolError.invalid(`MIG_DATA_WRITE: size ${size} but ${data.byteLength} bytes`);
  return { argsz: dv.getUint32(16, true), size, data };
}
