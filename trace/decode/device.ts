/** DEVICE_GET_INFO (flags, region and IRQ counts) and DEVICE_RESET (header only). */
import { DeviceFlag } from '../../protocol/constants.js';
import type { TraceFields } from '../fields.js';
import { flagNames } from '../names.js';
import { u32 } from './bytes.js';

export function traceDeviceInfoRequest(msg: Uint8Array, out: TraceFields): void {
  out.argsz = u32(msg, 16);
}

export function traceDeviceInfoReply(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  out.flags = flagNames(u32(msg, 20), DeviceFlag);
  out.regions = u32(msg, 24);
  out.irqs = u32(msg, 28);
  out.argsz = argsz;
}
