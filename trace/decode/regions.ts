/**
 * DEVICE_GET_REGION_INFO (the region, its size, flags and capability chain:
 * sparse mmap areas, type/subtype, MSI-X mappable) and DEVICE_GET_REGION_IO_FDS.
 * The chain is walked leniently: a bad pointer ends the walk with a note.
 */
import { RegionCap, RegionFlag } from '../../protocol/constants.js';
import { bounded, hex, type TraceFields, type TraceValue } from '../fields.js';
import { flagNames, regionName } from '../names.js';
import { u16, u32, u64 } from './bytes.js';

/** Most capabilities walked (a loop in a hostile chain ends here). */
const MAX_CAPS = 16;

export function traceRegionInfoRequest(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  out.region = regionName(u32(msg, 24));
  out.argsz = argsz;
}

export function traceRegionInfoReply(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  const flags = u32(msg, 20);
  out.region = regionName(u32(msg, 24));
  const capOffset = u32(msg, 28);
  out.size = hex(u64(msg, 32));
  out.offset = hex(u64(msg, 40));
  out.flags = flagNames(flags, RegionFlag);
  out.argsz = argsz;
  if (flags & RegionFlag.CAPS && capOffset !== 0) out.caps = regionCaps(msg, capOffset);
}

/** The capability chain from `first` (an offset from the payload's start). */
function regionCaps(msg: Uint8Array, first: number): TraceValue[] {
  const caps: TraceValue[] = [];
  const base = 16;
  let at = first;
  try {
    for (let n = 0; at !== 0; n++) {
      if (n >= MAX_CAPS) {
        caps.push('chain too long');
        break;
      }
      const id = u16(msg, base + at);
      const version = u16(msg, base + at + 2);
      const next = u32(msg, base + at + 4);
      if (id === RegionCap.SPARSE_MMAP) {
        const count = u32(msg, base + at + 8);
        const areas: { offset: bigint; size: bigint }[] = [];
        for (let i = 0; i < Math.min(count, 64); i++) {
          areas.push({ offset: u64(msg, base + at + 16 + i * 16), size: u64(msg, base + at + 24 + i * 16) });
        }
        caps.push({ sparse: bounded(areas, (a) => `${hex(a.offset)}+${hex(a.size)}`), ...(count > 64 && { count }) });
      } else if (id === RegionCap.TYPE) {
        caps.push({ type: u32(msg, base + at + 8), subtype: u32(msg, base + at + 12) });
      } else if (id === RegionCap.MSIX_MAPPABLE) {
        caps.push('msix-mappable');
      } else {
        caps.push({ id, version });
      }
      if (next !== 0 && next <= at) {
        caps.push('chain goes backwards');
        break;
      }
      at = next;
    }
  } catch (err) {
    caps.push(err instanceof Error ? err.message : String(err));
  }
  return caps;
}

export function traceRegionIoFdsRequest(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  out.region = regionName(u32(msg, 24));
  out.argsz = argsz;
}

export function traceRegionIoFdsReply(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  out.region = regionName(u32(msg, 24));
  const count = u32(msg, 28);
  out.count = count;
  out.argsz = argsz;
  const present = Math.min(count, Math.floor((msg.byteLength - 32) / 40));
  if (present <= 0) return;
  const subs: number[] = [];
  for (let i = 0; i < present; i++) subs.push(32 + i * 40);
  out.subRegions = bounded(subs, (o) => ({
    offset: hex(u64(msg, o)),
    size: hex(u64(msg, o + 8)),
    fd: u32(msg, o + 16),
    type: u32(msg, o + 20) === 0 ? 'ioeventfd' : u32(msg, o + 20) === 1 ? 'ioregionfd' : u32(msg, o + 20),
    flags: u32(msg, o + 24),
    data: hex(u64(msg, o + 32)),
  }));
}
