/**
 * DEVICE_FEATURE: the feature by name, GET/SET/PROBE, and its data: migration
 * flags, device states, DMA logging ranges and dirty-page reports.
 */
import { DeviceFeature, DeviceFeatureFlag, MigrationFlag, migrationStateName } from '../../protocol/features.js';
import { bounded, hex, type TraceFields } from '../fields.js';
import { flagNames } from '../names.js';
import { countBits, u32, u64 } from './bytes.js';

const FEATURE_NAMES = new Map<number, string>(Object.entries(DeviceFeature).map(([name, value]) => [value, name]));

/** Where the feature's data starts. */
const DATA = 24;

function op(flags: number): string {
  return flagNames(flags & ~DeviceFeatureFlag.MASK, {
    GET: DeviceFeatureFlag.GET,
    SET: DeviceFeatureFlag.SET,
    PROBE: DeviceFeatureFlag.PROBE,
  });
}

/** The fields every DEVICE_FEATURE message has; returns the feature and the operation bits. */
function common(msg: Uint8Array, out: TraceFields): { feature: number; flags: number } {
  const argsz = u32(msg, 16);
  const flags = u32(msg, 20);
  const feature = flags & DeviceFeatureFlag.MASK;
  out.feature = FEATURE_NAMES.get(feature) ?? `feature${feature}`;
  out.op = op(flags);
  out.argsz = argsz;
  return { feature, flags };
}

export function traceFeatureRequest(msg: Uint8Array, out: TraceFields): void {
  const { feature, flags } = common(msg, out);
  if (flags & DeviceFeatureFlag.PROBE || msg.byteLength <= DATA) return;
  if (feature === DeviceFeature.MIG_DEVICE_STATE && flags & DeviceFeatureFlag.SET) {
    out.state = migrationStateName(u32(msg, DATA));
  } else if (feature === DeviceFeature.DMA_LOGGING_START) {
    out.pageSize = hex(u64(msg, DATA));
    const count = u32(msg, DATA + 8);
    const ranges: number[] = [];
    for (let i = 0; i < Math.min(count, 64); i++) ranges.push(DATA + 16 + i * 16);
    out.ranges = count === 0 ? 'all' : bounded(ranges, (o) => `${hex(u64(msg, o))}+${hex(u64(msg, o + 8))}`);
  } else if (feature === DeviceFeature.DMA_LOGGING_REPORT) {
    report(msg, out);
  }
}

export function traceFeatureReply(msg: Uint8Array, out: TraceFields): void {
  const { feature, flags } = common(msg, out);
  if (!(flags & DeviceFeatureFlag.GET) || msg.byteLength <= DATA) return;
  if (feature === DeviceFeature.MIGRATION) {
    out.migration = flagNames(Number(u64(msg, DATA) & 0xffffffffn), MigrationFlag);
  } else if (feature === DeviceFeature.MIG_DEVICE_STATE) {
    out.state = migrationStateName(u32(msg, DATA));
  } else if (feature === DeviceFeature.DMA_LOGGING_REPORT) {
    report(msg, out);
    const { bits, partial } = countBits(msg.subarray(DATA + 24));
    out.dirtyPages = partial ? `${bits}+` : bits;
  }
}

function report(msg: Uint8Array, out: TraceFields): void {
  out.iova = hex(u64(msg, DATA));
  out.length = hex(u64(msg, DATA + 8));
  out.pageSize = hex(u64(msg, DATA + 16));
}
