/** REGION_READ, REGION_WRITE and REGION_WRITE_MULTI: region by name, offset, count, the data's first bytes. */
import { bounded, dataHex, hex, type TraceFields } from '../fields.js';
import { regionName } from '../names.js';
import { u32, u64 } from './bytes.js';

/** Most WRITE_MULTI entries looked at (QEMU sends at most 200). */
const MAX_MULTI = 256;

function access(msg: Uint8Array, out: TraceFields): number {
  out.region = regionName(u32(msg, 24));
  out.offset = hex(u64(msg, 16));
  const count = u32(msg, 28);
  out.count = count;
  return count;
}

/** READ request, WRITE reply: the access alone. */
export function traceRegionAccess(msg: Uint8Array, out: TraceFields): void {
  access(msg, out);
}

/** WRITE request, READ reply: the access and its data (noted when the length disagrees with count). */
export function traceRegionData(msg: Uint8Array, out: TraceFields): void {
  const count = access(msg, out);
  const data = msg.subarray(32);
  out.data = dataHex(data);
  if (data.byteLength !== count) out.dataBytes = data.byteLength;
}

export function traceWriteMultiRequest(msg: Uint8Array, out: TraceFields): void {
  const cnt = u64(msg, 16);
  out.writes = Number(cnt > 0xffffffffn ? 0xffffffffn : cnt);
  const n = Math.min(Number(cnt > 0xffffffffn ? 0xffffffffn : cnt), MAX_MULTI, Math.floor((msg.byteLength - 24) / 24));
  const at: number[] = [];
  for (let i = 0; i < n; i++) at.push(24 + i * 24);
  out.entries = bounded(at, (o) => {
    const count = u32(msg, o + 12);
    return {
      region: regionName(u32(msg, o + 8)),
      offset: hex(u64(msg, o)),
      count,
      data: dataHex(msg.subarray(o + 16, o + 16 + Math.min(count, 8))),
    };
  });
}

export function traceWriteMultiReply(msg: Uint8Array, out: TraceFields): void {
  const cnt = u64(msg, 16);
  out.writes = Number(cnt > 0xffffffffn ? 0xffffffffn : cnt);
}
