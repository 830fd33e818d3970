/**
 * DEVICE_GET_REGION_INFO (5) with its capability chain, and
 * DEVICE_GET_REGION_IO_FDS (6).
 *
 * GET_REGION_INFO (request and reply): argsz u32 @0, flags u32 @4, index u32 @8,
 * cap_offset u32 @12, size u64 @16, offset u64 @24, then (reply) the caps. Each
 * cap: id u16, version u16, next u32 (offset from the start of the struct, 0 = last).
 * SPARSE_MMAP: nr_areas u32, reserved u32, areas {offset u64, size u64}[].
 * TYPE: type u32, subtype u32. MSIX_MAPPABLE: no body.
 *
 * GET_REGION_IO_FDS: argsz u32, flags u32, index u32, count u32, then (reply)
 * `count` sub-regions of 40 bytes (spec layout).
 */
import { VfioUserCommand, HEADER_SIZE, RegionCap, RegionFlag } from './constants.js';
import { ProtocolError } from './errors.js';
import { dataView, newReply, newRequest } from './header.js';
import { defineStruct } from './struct.js';

const CAP_HEADER_SIZE = 8;
const SPARSE_AREA_SIZE = 16;
const SUB_REGION_SIZE = 40;
/** Most caps a decoder walks before calling the chain a loop. */
const MAX_CAPS = 64;

export interface RegionInfoMessage {
  argsz: number;
  /** RegionFlag bits. */
  flags: number;
  index: number;
  capOffset: number;
  size: bigint;
  offset: bigint;
}

export type RegionCapability =
  | { id: typeof RegionCap.SPARSE_MMAP; areas: { offset: bigint; size: bigint }[] }
  | { id: typeof RegionCap.TYPE; type: number; subtype: number }
  | { id: typeof RegionCap.MSIX_MAPPABLE };

export interface RegionInfoReply extends RegionInfoMessage {
  /** Empty when the reply carries no chain (no CAPS flag, or truncated). */
  caps: RegionCapability[];
}

/** The fixed part of GET_REGION_INFO (request, and reply before its caps). */
const REGION_INFO = defineStruct<RegionInfoMessage>({
  argsz: 'u32',
  flags: 'u32',
  index: 'u32',
  capOffset: 'u32',
  size: 'u64',
  offset: 'u64',
});
export const REGION_INFO_SIZE = REGION_INFO.size;

export function encodeRegionInfoRequest(id: number, index: number, argsz = REGION_INFO_SIZE): Uint8Array {
  const fixed = { argsz, flags: 0, index, capOffset: 0, size: 0n, offset: 0n };
  return REGION_INFO.encodeInto(newRequest(id, VfioUserCommand.DEVICE_GET_REGION_INFO, REGION_INFO_SIZE), fixed);
}

/** Request and reply share the fixed part. EINVAL if the payload is shorter than 32 bytes. */
export function decodeRegionInfoRequest(msg: Uint8Array): RegionInfoMessage {
  return REGION_INFO.decode(msg, VfioUserCommand.DEVICE_GET_REGION_INFO);
}

/** Bytes one capability takes on the wire (its 8-byte header included). */
function capabilitySize(cap: RegionCapability): number {
  switch (cap.id) {
    case RegionCap.SPARSE_MMAP:
      return CAP_HEADER_SIZE + 8 + SPARSE_AREA_SIZE * cap.areas.length;
    case RegionCap.TYPE:
      return CAP_HEADER_SIZE + 8;
    case RegionCap.MSIX_MAPPABLE:
      return CAP_HEADER_SIZE;
  }
}

/** Size of a full GET_REGION_INFO reply payload with these caps. */
export function regionInfoFullSize(caps: readonly RegionCapability[]): number {
  let n = REGION_INFO_SIZE;
  for (const c of caps) n += capabilitySize(c);
  return n;
}

export interface EncodedRegionInfo {
  bytes: Uint8Array;
  /** True when the whole chain fit in the request's argsz (only then may an fd go with it). */
  complete: boolean;
}

/**
 * Encode a GET_REGION_INFO reply the way libvfio-user does: reply argsz is the
 * full size (32 + caps); the payload is min(full, requestArgsz) bytes; the chain
 * and the CAPS flag are present only when the whole chain fits. `info.argsz`
 * and `info.capOffset` are ignored (computed here); CAPS in `info.flags` is
 * recomputed.
 */
export function encodeRegionInfoReply(
  id: number,
  info: Omit<RegionInfoMessage, 'argsz' | 'capOffset'>,
  caps: readonly RegionCapability[],
  requestArgsz: number,
): EncodedRegionInfo {
  const full = regionInfoFullSize(caps);
  const complete = caps.length === 0 || requestArgsz >= full;
  const payload = caps.length === 0 ? REGION_INFO_SIZE : Math.max(REGION_INFO_SIZE, Math.min(full, requestArgsz));
  const m = newReply(id, VfioUserCommand.DEVICE_GET_REGION_INFO, payload);
  const v = m.view;
  const withCaps = caps.length > 0 && complete;
  REGION_INFO.write(v, HEADER_SIZE, {
    argsz: full,
    flags: (info.flags & ~RegionFlag.CAPS) | (withCaps ? RegionFlag.CAPS : 0),
    index: info.index,
    capOffset: withCaps ? REGION_INFO_SIZE : 0,
    size: info.size,
    offset: info.offset,
  });
  if (withCaps) {
    let at = REGION_INFO_SIZE; // offset from the start of the struct (payload)
    caps.forEach((cap, i) => {
      const size = capabilitySize(cap);
      const o = 16 + at;
      const next = i === caps.length - 1 ? 0 : at + size;
      v.setUint16(o, cap.id, true);
      v.setUint16(o + 2, 1, true);
      v.setUint32(o + 4, next, true);
      if (cap.id === RegionCap.SPARSE_MMAP) {
        v.setUint32(o + 8, cap.areas.length, true);
        cap.areas.forEach((a, j) => {
          v.setBigUint64(o + 16 + j * SPARSE_AREA_SIZE, a.offset, true);
          v.setBigUint64(o + 24 + j * SPARSE_AREA_SIZE, a.size, true);
        });
      } else if (cap.id === RegionCap.TYPE) {
        v.setUint32(o + 8, cap.type >>> 0, true);
        v.setUint32(o + 12, cap.subtype >>> 0, true);
      }
      at += size;
    });
  }
  return { bytes: m.bytes, complete };
}

/**
 * Decode a GET_REGION_INFO reply and walk its chain (only when CAPS is set).
 * EINVAL for a chain that points outside the reply, overlaps the fixed part,
 * loops, or holds a truncated cap. Unknown cap ids are skipped.
 */
export function decodeRegionInfoReply(msg: Uint8Array): RegionInfoReply {
  const fixed = decodeRegionInfoRequest(msg);
  const caps: RegionCapability[] = [];
  if (!(fixed.flags & RegionFlag.CAPS) || fixed.capOffset === 0) return { ...fixed, caps };
  const payload = msg.subarray(16);
  const v = dataView(payload);
  let at = fixed.capOffset;
  for (let n = 0; at !== 0; n++) {
    if (n >= MAX_CAPS) throw ProtocolError.invalid('region info: capability chain too long (loop?)');
    if (at < REGION_INFO_SIZE || at + CAP_HEADER_SIZE > payload.byteLength) {
      throw ProtocolError.invalid(`region info: capability at ${at} outside the reply (${payload.byteLength} bytes)`);
    }
    const capId = v.getUint16(at, true);
    const next = v.getUint32(at + 4, true);
    if (next !== 0 && next <= at) throw ProtocolError.invalid('region info: capability chain goes backwards');
    const need = (len: number): void => {
      if (at + len > payload.byteLength) throw ProtocolError.invalid(`region info: capability ${capId} truncated`);
    };
    if (capId === RegionCap.SPARSE_MMAP) {
      need(16);
      const nr = v.getUint32(at + 8, true);
      need(16 + nr * SPARSE_AREA_SIZE);
      const areas: { offset: bigint; size: bigint }[] = [];
      for (let j = 0; j < nr; j++) {
        areas.push({ offset: v.getBigUint64(at + 16 + j * 16, true), size: v.getBigUint64(at + 24 + j * 16, true) });
      }
      caps.push({ id: RegionCap.SPARSE_MMAP, areas });
    } else if (capId === RegionCap.TYPE) {
      need(16);
      caps.push({ id: RegionCap.TYPE, type: v.getUint32(at + 8, true), subtype: v.getUint32(at + 12, true) });
    } else if (capId === RegionCap.MSIX_MAPPABLE) {
      caps.push({ id: RegionCap.MSIX_MAPPABLE });
    }
    at = next;
  }
  return { ...fixed, caps };
}

export interface RegionIoFdsMessage {
  argsz: number;
  flags: number;
  index: number;
  count: number;
}

/** One ioeventfd (type 0: `datamatch`) or ioregionfd (type 1: `userData`) sub-region. */
export interface SubRegion {
  offset: bigint;
  size: bigint;
  /** Index into the fds sent with the reply. */
  fdIndex: number;
  type: number;
  flags: number;
  /** datamatch (ioeventfd) or user_data (ioregionfd). */
  data: bigint;
}

export interface RegionIoFdsReply extends RegionIoFdsMessage {
  subRegions: SubRegion[];
}

const REGION_IO_FDS = defineStruct<RegionIoFdsMessage>({ argsz: 'u32', flags: 'u32', index: 'u32', count: 'u32' });
export const REGION_IO_FDS_SIZE = REGION_IO_FDS.size;

export function encodeRegionIoFdsRequest(id: number, index: number, argsz = REGION_IO_FDS_SIZE): Uint8Array {
  return REGION_IO_FDS.encodeInto(newRequest(id, VfioUserCommand.DEVICE_GET_REGION_IO_FDS, REGION_IO_FDS_SIZE), {
    argsz,
    flags: 0,
    index,
    count: 0,
  });
}

/** EINVAL if the payload is shorter than 16 bytes. */
export function decodeRegionIoFdsRequest(msg: Uint8Array): RegionIoFdsMessage {
  return REGION_IO_FDS.decode(msg, VfioUserCommand.DEVICE_GET_REGION_IO_FDS);
}

/**
 * Reply: argsz = the full size (16 + 40 × subRegions); the sub-regions are
 * included only if that fits in `requestArgsz` (count always says how many exist).
 */
export function encodeRegionIoFdsReply(
  id: number,
  index: number,
  subRegions: readonly SubRegion[],
  requestArgsz: number,
): EncodedRegionInfo {
  const full = REGION_IO_FDS_SIZE + SUB_REGION_SIZE * subRegions.length;
  const complete = requestArgsz >= full;
  const m = newReply(id, VfioUserCommand.DEVICE_GET_REGION_IO_FDS, complete ? full : REGION_IO_FDS_SIZE);
  const v = m.view;
  REGION_IO_FDS.write(v, HEADER_SIZE, { argsz: full, flags: 0, index, count: subRegions.length });
  if (complete) {
    subRegions.forEach((s, i) => {
      const o = 32 + i * SUB_REGION_SIZE;
      v.setBigUint64(o, s.offset, true);
      v.setBigUint64(o + 8, s.size, true);
      v.setUint32(o + 16, s.fdIndex >>> 0, true);
      v.setUint32(o + 20, s.type >>> 0, true);
      v.setUint32(o + 24, s.flags >>> 0, true);
      v.setBigUint64(o + 32, s.data, true);
    });
  }
  return { bytes: m.bytes, complete };
}

/** EINVAL if count sub-regions are claimed but not all present... unless the reply was truncated (then none are decoded). */
export function decodeRegionIoFdsReply(msg: Uint8Array): RegionIoFdsReply {
  const fixed = decodeRegionIoFdsRequest(msg);
  const payload = msg.byteLength - 16;
  const subRegions: SubRegion[] = [];
  if (payload === REGION_IO_FDS_SIZE) return { ...fixed, subRegions };
  if (payload !== REGION_IO_FDS_SIZE + fixed.count * SUB_REGION_SIZE) {
    throw ProtocolError.invalid(`region io fds: ${payload} bytes for ${fixed.count} sub-regions`);
  }
  const v = dataView(msg);
  for (let i = 0; i < fixed.count; i++) {
    const o = 32 + i * SUB_REGION_SIZE;
    subRegions.push({
      offset: v.getBigUint64(o, true),
      size: v.getBigUint64(o + 8, true),
      fdIndex: v.getUint32(o + 16, true),
      type: v.getUint32(o + 20, true),
      flags: v.getUint32(o + 24, true),
      data: v.getBigUint64(o + 32, true),
    });
  }
  return { ...fixed, subRegions };
}
