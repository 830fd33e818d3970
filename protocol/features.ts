/**
 * DEVICE_FEATURE (16): argsz u32 @0, flags u32 @4 (bits 0-15 feature, GET 1<<16,
 * SET 1<<17, PROBE 1<<18), data @8; reply: same layout (GET appends data).
 */
import { VfioUserCommand } from './constants.js';
import { newRequest, requirePayload } from './header.js';

const DEVICE_FEATURE_SIZE = 8;

export const DeviceFeatureFlag = {
  MASK: 0xffff,
  GET: 1 << 16,
  SET: 1 << 17,
  PROBE: 1 << 18,
} as const;

export interface DeviceFeatureMessage {
  argsz: number;
  flags: number;
  /** A view into the message. */
  data: Uint8Array;
}

export function encodeDeviceFeatureRequest(
  id: number,
  f: Omit<DeviceFeatureMessage, 'argsz'> & { argsz?: number },
): Uint8Array {
  const m = newRequest(id, VfioUserCommand.DEVICE_FEATURE, DEVICE_FEATURE_SIZE + f.data.byteLength);
  m.view.setUint32(16, (f.argsz ?? DEVICE_FEATURE_SIZE + f.data.byteLength) >>> 0, true);
  m.view.setUint32(20, f.flags >>> 0, true);
  m.bytes.set(f.data, 24);
  return m.bytes;
}

/** Request and reply share the layout. EINVAL if the payload is shorter than 8 bytes. */
export function decodeDeviceFeature(msg: Uint8Array): DeviceFeatureMessage {
  const dv = requirePayload(msg, DEVICE_FEATURE_SIZE, VfioUserCommand.DEVICE_FEATURE);
  return { argsz: dv.getUint32(16, true), flags: dv.getUint32(20, true), data: msg.subarray(24) };
}
