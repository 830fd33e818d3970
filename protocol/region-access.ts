/**
 * REGION_READ (9), REGION_WRITE (10) and REGION_WRITE_MULTI (15): the hot path.
 *
 * READ request: offset u64 @0, region u32 @8, count u32 @12; reply: the same 16 bytes + data @16.
 * WRITE request: offset u64 @0, region u32 @8, count u32 @12, data @16; reply: the 16 bytes echoed.
 * WRITE_MULTI request: wr_cnt u64 @0, then wr_cnt × {offset u64, region u32, count u32, data[8]};
 * reply: wr_cnt u64 (QEMU always sets NO_REPLY).
 */
import { VfioUserCommand, HEADER_SIZE, HeaderFlag, commandName } from './constants.js';
import { ProtocolError } from './errors.js';
import {
  newMessageBytes,
  newReply,
  newRequest,
  readU32,
  readU64,
  requirePayload,
  writeU32,
  writeU64,
} from './header.js';

const REGION_ACCESS_SIZE = 16;
const WRITE_MULTI_ENTRY_SIZE = 24;
/** Data bytes one WRITE_MULTI entry can carry. */
const WRITE_MULTI_DATA_MAX = 8;
/** Most entries in one WRITE_MULTI (QEMU's VFIO_USER_MULTI_MAX). */
const WRITE_MULTI_MAX_ENTRIES = 200;

export interface RegionAccess {
  offset: bigint;
  region: number;
  count: number;
}

export interface RegionWrite extends RegionAccess {
  /** `count` bytes: a view into the message (decodeRegionWriteRequest copies register-sized data). */
  data: Uint8Array;
}

export function encodeRegionReadRequest(id: number, a: RegionAccess, noReply = false): Uint8Array {
  const bytes = newMessageBytes(id, VfioUserCommand.REGION_READ, commandFlags(noReply), REGION_ACCESS_SIZE);
  writeAccess(bytes, a.offset, a.region, a.count);
  return bytes;
}

// The request decoders and reply encoders of REGION_READ/REGION_WRITE run once
// per guest MMIO access: they read and write bytes directly (no DataView, see
// header.ts's dataView).

/** EINVAL unless `msg` has a payload of at least 16 bytes (the hot-path twin of requirePayload). */
function requireAccess(msg: Uint8Array, what: number | string): void {
  const len = msg.byteLength - HEADER_SIZE;
  if (len < REGION_ACCESS_SIZE) {
    const name = typeof what === 'number' ? commandName(what) : what;
    throw ProtocolError.invalid(`${name}: payload of ${len < 0 ? 0 : len} bytes, need at least ${REGION_ACCESS_SIZE}`);
  }
}

function commandFlags(noReply: boolean): number {
  return HeaderFlag.TYPE_COMMAND | (noReply ? HeaderFlag.NO_REPLY : 0);
}

/** `data` into `bytes` at 32 (a loop for MMIO-sized data: faster than set() there). */
function copyData(bytes: Uint8Array, data: Uint8Array): void {
  const n = data.byteLength;
  if (n <= 8) {
    for (let i = 0; i < n; i++) bytes[32 + i] = data[i]!;
  } else {
    bytes.set(data, 32);
  }
}

/** EINVAL if the payload is shorter than 16 bytes. */
export function decodeRegionReadRequest(msg: Uint8Array): RegionAccess {
  requireAccess(msg, VfioUserCommand.REGION_READ);
  return { offset: readU64(msg, 16), region: readU32(msg, 24), count: readU32(msg, 28) };
}

/** The 16-byte access (offset, region, count) at byte 16 of `b`. */
function writeAccess(b: Uint8Array, offset: bigint, region: number, count: number): void {
  writeU64(b, 16, offset);
  writeU32(b, 24, region >>> 0);
  writeU32(b, 28, count >>> 0);
}

/** Reply: the access echoed with count = data.length, then the data. */
export function encodeRegionReadReply(id: number, offset: bigint, region: number, data: Uint8Array): Uint8Array {
  const n = data.byteLength;
  const bytes = newMessageBytes(id, VfioUserCommand.REGION_READ, HeaderFlag.TYPE_REPLY, REGION_ACCESS_SIZE + n);
  writeAccess(bytes, offset, region, n);
  copyData(bytes, data);
  return bytes;
}

/** EINVAL if shorter than 16 bytes or the data length differs from count. `data` is a view into `msg`. */
export function decodeRegionReadReply(msg: Uint8Array): RegionWrite {
  requireAccess(msg, 'REGION_READ reply');
  const count = readU32(msg, 28);
  const data = msg.subarray(32);
  if (data.byteLength !== count)
    throw ProtocolError.invalid(`REGION_READ reply: count ${count} but ${data.byteLength} data bytes`);
  return { offset: readU64(msg, 16), region: readU32(msg, 24), count, data };
}

export function encodeRegionWriteRequest(
  id: number,
  offset: bigint,
  region: number,
  data: Uint8Array,
  noReply = false,
): Uint8Array {
  const n = data.byteLength;
  const bytes = newMessageBytes(id, VfioUserCommand.REGION_WRITE, commandFlags(noReply), REGION_ACCESS_SIZE + n);
  writeAccess(bytes, offset, region, n);
  copyData(bytes, data);
  return bytes;
}

/** Where a REGION_WRITE request's data starts. */
const WRITE_DATA_AT = HEADER_SIZE + REGION_ACCESS_SIZE;
/** Register-sized REGION_WRITE data is copied into a small heap array: cheaper for its user than any view of a message's off-heap bytes. */
const SMALL_WRITE = 8;
const NO_DATA = new Uint8Array(0);

/** The `count` data bytes of a REGION_WRITE request: a copy when register-sized, else a view into `msg`. */
function writeData(msg: Uint8Array, count: number): Uint8Array {
  if (count > SMALL_WRITE) return msg.subarray(WRITE_DATA_AT);
  if (count === 0) return NO_DATA;
  const data = new Uint8Array(count);
  for (let i = 0; i < count; i++) data[i] = msg[WRITE_DATA_AT + i]!;
  return data;
}

/**
 * EINVAL if shorter than 16 bytes or the data length is not count. `data`: up
 * to 8 bytes (a register write) are copied into a fresh array, larger data is
 * a view into `msg`. This runs once per guest MMIO write (the NVMe doorbell);
 * the result is a plain literal that V8 keeps out of the heap when the caller
 * destructures it at once (measured: no more young-generation collections than
 * reading the fields by hand).
 */
export function decodeRegionWriteRequest(msg: Uint8Array): RegionWrite {
  requireAccess(msg, VfioUserCommand.REGION_WRITE);
  const count = readU32(msg, 28);
  const length = msg.byteLength - WRITE_DATA_AT;
  if (length !== count) throw ProtocolError.invalid(`REGION_WRITE: count ${count} but ${length} data bytes`);
  return { offset: readU64(msg, 16), region: readU32(msg, 24), count, data: writeData(msg, count) };
}

export function encodeRegionWriteReply(id: number, a: RegionAccess): Uint8Array {
  const bytes = newMessageBytes(id, VfioUserCommand.REGION_WRITE, HeaderFlag.TYPE_REPLY, REGION_ACCESS_SIZE);
  writeAccess(bytes, a.offset, a.region, a.count);
  return bytes;
}

/** EINVAL if shorter than 16 bytes. */
export function decodeRegionWriteReply(msg: Uint8Array): RegionAccess {
  requireAccess(msg, 'REGION_WRITE reply');
  return { offset: readU64(msg, 16), region: readU32(msg, 24), count: readU32(msg, 28) };
}

export function encodeRegionWriteMultiRequest(id: number, writes: readonly RegionWrite[], noReply = true): Uint8Array {
  const m = newRequest(id, VfioUserCommand.REGION_WRITE_MULTI, 8 + WRITE_MULTI_ENTRY_SIZE * writes.length, noReply);
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
  const dv = requirePayload(msg, 8, VfioUserCommand.REGION_WRITE_MULTI);
  const cnt = dv.getBigUint64(16, true);
  if (cnt === 0n || cnt > BigInt(WRITE_MULTI_MAX_ENTRIES))
    throw ProtocolError.invalid(`REGION_WRITE_MULTI: wr_cnt ${cnt}`);
  const n = Number(cnt);
  if (msg.byteLength - 16 !== 8 + n * WRITE_MULTI_ENTRY_SIZE) {
    throw ProtocolError.invalid(`REGION_WRITE_MULTI: ${msg.byteLength - 16} bytes for ${n} writes`);
  }
  const out: RegionWrite[] = [];
  for (let i = 0; i < n; i++) {
    const o = 24 + i * WRITE_MULTI_ENTRY_SIZE;
    const count = dv.getUint32(o + 12, true);
    if (count === 0 || count > WRITE_MULTI_DATA_MAX)
      throw ProtocolError.invalid(`REGION_WRITE_MULTI: entry ${i} count ${count}`);
    out.push({
      offset: dv.getBigUint64(o, true),
      region: dv.getUint32(o + 8, true),
      count,
      data: msg.subarray(o + 16, o + 16 + count),
    });
  }
  return out;
}

export function encodeRegionWriteMultiReply(id: number, wrCnt: number): Uint8Array {
  const m = newReply(id, VfioUserCommand.REGION_WRITE_MULTI, 8);
  m.view.setBigUint64(16, BigInt(wrCnt), true);
  return m.bytes;
}

export function decodeRegionWriteMultiReply(msg: Uint8Array): number {
  const dv = requirePayload(msg, 8, 'REGION_WRITE_MULTI reply');
  const n = dv.getBigUint64(16, true);
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(n);
}
