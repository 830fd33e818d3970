/**
 * REGION_READ (9), REGION_WRITE (10) and REGION_WRITE_MULTI (15): the hot path.
 *
 * READ request: offset u64 @0, region u32 @8, count u32 @12; reply: the same 16 bytes + data @16.
 * WRITE request: offset u64 @0, region u32 @8, count u32 @12, data @16; reply: the 16 bytes echoed.
 * WRITE_MULTI request: wr_cnt u64 @0, then wr_cnt × {offset u64, region u32, count u32, data[8]};
 * reply: wr_cnt u64 (QEMU always sets NO_REPLY).
 */
import { Command } from './constants.js';
import { ProtocolError } from './errors.js';
import { newReply, newRequest, requirePayload } from './header.js';

export const REGION_ACCESS_SIZE = 16;
export const WRITE_MULTI_ENTRY_SIZE = 24;
/** Data bytes one WRITE_MULTI entry can carry. */
export const WRITE_MULTI_DATA_MAX = 8;
/** Most entries in one WRITE_MULTI (QEMU's VFIO_USER_MULTI_MAX). */
export const WRITE_MULTI_MAX_ENTRIES = 200;

export interface RegionAccess {
  offset: bigint;
  region: number;
  count: number;
}

export interface RegionWrite extends RegionAccess {
  /** A view into the message (count bytes, or what arrived: the caller checks). */
  data: Uint8Array;
}

export function encodeRegionReadRequest(id: number, a: RegionAccess, noReply = false): Uint8Array {
  const m = newRequest(id, Command.REGION_READ, REGION_ACCESS_SIZE, noReply);
  m.view.setBigUint64(16, a.offset, true);
  m.view.setUint32(24, a.region >>> 0, true);
  m.view.setUint32(28, a.count >>> 0, true);
  return m.bytes;
}

/** EINVAL if the payload is shorter than 16 bytes. */
export function decodeRegionReadRequest(msg: Uint8Array): RegionAccess {
  const dv = requirePayload(msg, REGION_ACCESS_SIZE, Command.REGION_READ);
  return { offset: dv.getBigUint64(16, true), region: dv.getUint32(24, true), count: dv.getUint32(28, true) };
}

/** Reply: the access echoed with count = data.length, then the data. */
export function encodeRegionReadReply(id: number, offset: bigint, region: number, data: Uint8Array): Uint8Array {
  const m = newReply(id, Command.REGION_READ, REGION_ACCESS_SIZE + data.byteLength);
  m.view.setBigUint64(16, offset, true);
  m.view.setUint32(24, region >>> 0, true);
  m.view.setUint32(28, data.byteLength, true);
  m.bytes.set(data, 32);
  return m.bytes;
}

/** EINVAL if shorter than 16 bytes or the data length differs from count. `data` is a view into `msg`. */
export function decodeRegionReadReply(msg: Uint8Array): RegionWrite {
  const dv = requirePayload(msg, REGION_ACCESS_SIZE, 'REGION_READ reply');
  const count = dv.getUint32(28, true);
  const data = msg.subarray(32);
  if (data.byteLength !== count) throw ProtocolError.invalid(`REGION_READ reply: count ${count} but ${data.byteLength} data bytes`);
  return { offset: dv.getBigUint64(16, true), region: dv.getUint32(24, true), count, data };
}

export function encodeRegionWriteRequest(id: number, offset: bigint, region: number, data: Uint8Array, noReply = false): Uint8Array {
  const m = newRequest(id, Command.REGION_WRITE, REGION_ACCESS_SIZE + data.byteLength, noReply);
  m.view.setBigUint64(16, offset, true);
  m.view.setUint32(24, region >>> 0, true);
  m.view.setUint32(28, data.byteLength, true);
  m.bytes.set(data, 32);
  return m.bytes;
}

/** EINVAL if shorter than 16 bytes. `data` is a view into `msg`; the caller checks data.length === count. */
export function decodeRegionWriteRequest(msg: Uint8Array): RegionWrite {
  const dv = requirePayload(msg, REGION_ACCESS_SIZE, Command.REGION_WRITE);
  return {
    offset: dv.getBigUint64(16, true),
    region: dv.getUint32(24, true),
    count: dv.getUint32(28, true),
    data: msg.subarray(32),
  };
}

export function encodeRegionWriteReply(id: number, a: RegionAccess): Uint8Array {
  const m = newReply(id, Command.REGION_WRITE, REGION_ACCESS_SIZE);
  m.view.setBigUint64(16, a.offset, true);
  m.view.setUint32(24, a.region >>> 0, true);
  m.view.setUint32(28, a.count >>> 0, true);
  return m.bytes;
}

/** EINVAL if shorter than 16 bytes. */
export function decodeRegionWriteReply(msg: Uint8Array): RegionAccess {
  const dv = requirePayload(msg, REGION_ACCESS_SIZE, 'REGION_WRITE reply');
  return { offset: dv.getBigUint64(16, true), region: dv.getUint32(24, true), count: dv.getUint32(28, true) };
}

export function encodeRegionWriteMultiRequest(id: number, writes: readonly RegionWrite[], noReply = true): Uint8Array {
  const m = newRequest(id, Command.REGION_WRITE_MULTI, 8 + WRITE_MULTI_ENTRY_SIZE * writes.length, noReply);
  m.view.setBigUint64(16, BigInt(writes.length), true);
  writes.forEach((w, i) => {
    const o = 24 + i * WRITE_MULTI_ENTRY_SIZE;
    m.view.setBigUint64(o, w.offset, true);
    m.view.setUint32(o + 8, w.region >>> 0, true);
    m.view.setUint32(o + 12, w.count >>> 0, true);
    m.bytes.set(w.data.subarray(0, WRITE_MULTI_DATA_MAX), o + 16);
  });
  return m.bytes;
}

/**
 * EINVAL when: payload < 8; wr_cnt is 0 or > 200; the payload is not exactly
 * 8 + 24 × wr_cnt; an entry's count is 0 or > 8. Each entry's `data` is a view of `count` bytes.
 */
export function decodeRegionWriteMultiRequest(msg: Uint8Array): RegionWrite[] {
  const dv = requirePayload(msg, 8, Command.REGION_WRITE_MULTI);
  const cnt = dv.getBigUint64(16, true);
  if (cnt === 0n || cnt > BigInt(WRITE_MULTI_MAX_ENTRIES)) throw ProtocolError.invalid(`REGION_WRITE_MULTI: wr_cnt ${cnt}`);
  const n = Number(cnt);
  if (msg.byteLength - 16 !== 8 + n * WRITE_MULTI_ENTRY_SIZE) {
    throw ProtocolError.invalid(`REGION_WRITE_MULTI: ${msg.byteLength - 16} bytes for ${n} writes`);
  }
  const out: RegionWrite[] = [];
  for (let i = 0; i < n; i++) {
    const o = 24 + i * WRITE_MULTI_ENTRY_SIZE;
    const count = dv.getUint32(o + 12, true);
    if (count === 0 || count > WRITE_MULTI_DATA_MAX) throw ProtocolError.invalid(`REGION_WRITE_MULTI: entry ${i} count ${count}`);
    out.push({ offset: dv.getBigUint64(o, true), region: dv.getUint32(o + 8, true), count, data: msg.subarray(o + 16, o + 16 + count) });
  }
  return out;
}

export function encodeRegionWriteMultiReply(id: number, wrCnt: number): Uint8Array {
  const m = newReply(id, Command.REGION_WRITE_MULTI, 8);
  m.view.setBigUint64(16, BigInt(wrCnt), true);
  return m.bytes;
}

export function decodeRegionWriteMultiReply(msg: Uint8Array): number {
  const dv = requirePayload(msg, 8, 'REGION_WRITE_MULTI reply');
  const n = dv.getBigUint64(16, true);
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(n);
}

