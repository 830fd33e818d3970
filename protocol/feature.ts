/**
 * DEVICE_FEATURE (16), MIG_DATA_READ (17) and MIG_DATA_WRITE (18).
 *
 * DEVICE_FEATURE: argsz u32 @0, flags u32 @4 (bits 0-15 feature, GET 1<<16,
 * SET 1<<17, PROBE 1<<18), data @8; reply: same layout (GET appends data).
 * MIG_DATA_READ: argsz u32, size u32; reply argsz, size, data @8.
 * MIG_DATA_WRITE: argsz u32, size u32, data @8; reply: header only.
 */
import { Command } from './constants.js';
import { ProtocolError } from './errors.js';
import { newReply, newRequest, requirePayload, type NewMessage } from './header.js';

export const DEVICE_FEATURE_SIZE = 8;
export const MIG_DATA_SIZE = 8;

export const DeviceFeatureFlag = {
  MASK: 0xffff,
  GET: 1 << 16,
  SET: 1 << 17,
  PROBE: 1 << 18,
} as const;

/** Feature numbers (VFIO_DEVICE_FEATURE_*). */
export const DeviceFeature = {
  MIGRATION: 1,
  MIG_DEVICE_STATE: 2,
  DMA_LOGGING_START: 6,
  DMA_LOGGING_STOP: 7,
  DMA_LOGGING_REPORT: 8,
} as const;

export interface DeviceFeatureMessage {
  argsz: number;
  flags: number;
  /** A view into the message. */
  data: Uint8Array;
}

function encodeFeature(m: NewMessage, f: Omit<DeviceFeatureMessage, 'argsz'> & { argsz?: number }): Uint8Array {
  m.view.setUint32(16, (f.argsz ?? DEVICE_FEATURE_SIZE + f.data.byteLength) >>> 0, true);
  m.view.setUint32(20, f.flags >>> 0, true);
  m.bytes.set(f.data, 24);
  return m.bytes;
}

export function encodeDeviceFeatureRequest(id: number, f: Omit<DeviceFeatureMessage, 'argsz'> & { argsz?: number }): Uint8Array {
  return encodeFeature(newRequest(id, Command.DEVICE_FEATURE, DEVICE_FEATURE_SIZE + f.data.byteLength), f);
}

export function encodeDeviceFeatureReply(id: number, f: Omit<DeviceFeatureMessage, 'argsz'> & { argsz?: number }): Uint8Array {
  return encodeFeature(newReply(id, Command.DEVICE_FEATURE, DEVICE_FEATURE_SIZE + f.data.byteLength), f);
}

/** Request and reply share the layout. EINVAL if the payload is shorter than 8 bytes. */
export function decodeDeviceFeature(msg: Uint8Array): DeviceFeatureMessage {
  const dv = requirePayload(msg, DEVICE_FEATURE_SIZE, Command.DEVICE_FEATURE);
  return { argsz: dv.getUint32(16, true), flags: dv.getUint32(20, true), data: msg.subarray(24) };
}

export interface MigDataMessage {
  argsz: number;
  size: number;
  /** A view into the message (empty in a MIG_DATA_READ request). */
  data: Uint8Array;
}

export function encodeMigDataReadRequest(id: number, size: number, argsz = MIG_DATA_SIZE + size): Uint8Array {
  const m = newRequest(id, Command.MIG_DATA_READ, MIG_DATA_SIZE);
  m.view.setUint32(16, argsz >>> 0, true);
  m.view.setUint32(20, size >>> 0, true);
  return m.bytes;
}

/** EINVAL if the payload is not exactly 8 bytes. */
export function decodeMigDataReadRequest(msg: Uint8Array): { argsz: number; size: number } {
  const dv = requirePayload(msg, MIG_DATA_SIZE, Command.MIG_DATA_READ);
  if (msg.byteLength !== 16 + MIG_DATA_SIZE) throw ProtocolError.invalid('MIG_DATA_READ: request carries data');
  return { argsz: dv.getUint32(16, true), size: dv.getUint32(20, true) };
}

/** Fill a MIG_DATA message made for `data`: argsz = 8 + data.length, size = data.length, then the data. */
function withMigData(m: NewMessage, data: Uint8Array): Uint8Array {
  m.view.setUint32(16, MIG_DATA_SIZE + data.byteLength, true);
  m.view.setUint32(20, data.byteLength, true);
  m.bytes.set(data, 24);
  return m.bytes;
}

/** Reply: argsz = 8 + data.length, size = data.length (short = end of stream). */
export function encodeMigDataReadReply(id: number, data: Uint8Array): Uint8Array {
  return withMigData(newReply(id, Command.MIG_DATA_READ, MIG_DATA_SIZE + data.byteLength), data);
}

function decodeMigWithData(msg: Uint8Array, what: number | string): MigDataMessage {
  const dv = requirePayload(msg, MIG_DATA_SIZE, what);
  const size = dv.getUint32(20, true);
  const data = msg.subarray(24);
  if (data.byteLength !== size) throw ProtocolError.invalid(`MIG_DATA: size ${size} but ${data.byteLength} bytes`);
  return { argsz: dv.getUint32(16, true), size, data };
}

/** EINVAL if shorter than 8 bytes or size differs from the data length. */
export function decodeMigDataReadReply(msg: Uint8Array): MigDataMessage {
  return decodeMigWithData(msg, 'MIG_DATA_READ reply');
}

export function encodeMigDataWriteRequest(id: number, data: Uint8Array): Uint8Array {
  return withMigData(newRequest(id, Command.MIG_DATA_WRITE, MIG_DATA_SIZE + data.byteLength), data);
}

/** EINVAL if shorter than 8 bytes or size differs from the data length. */
export function decodeMigDataWriteRequest(msg: Uint8Array): MigDataMessage {
  return decodeMigWithData(msg, Command.MIG_DATA_WRITE);
}

/** The MIG_DATA_WRITE reply (and DEVICE_RESET's) is the header alone. */
export function encodeMigDataWriteReply(id: number): Uint8Array {
  return newReply(id, Command.MIG_DATA_WRITE, 0).bytes;
}
