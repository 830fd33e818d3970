/**
 * DEVICE_GET_INFO (4) and DEVICE_RESET (13): the device as a whole.
 *
 * GET_INFO: argsz u32 @0, flags u32 @4, num_regions u32 @8, num_irqs u32 @12 (request and reply).
 * RESET: header-only request and reply.
 */
import { VfioUserCommand } from './constants.js';
import { encodeEmptyReply, encodeEmptyRequest, newReply, newRequest } from './header.js';
import { defineStruct } from './struct.js';

export interface DeviceInfoMessage {
  argsz: number;
  /** DeviceFlag bits. */
  flags: number;
  numRegions: number;
  numIrqs: number;
}

const DEVICE_INFO = defineStruct<DeviceInfoMessage>({ argsz: 'u32', flags: 'u32', numRegions: 'u32', numIrqs: 'u32' });

export const DEVICE_INFO_SIZE = DEVICE_INFO.size;

export function encodeDeviceInfoRequest(id: number, argsz = DEVICE_INFO_SIZE): Uint8Array {
  return DEVICE_INFO.encodeInto(newRequest(id, VfioUserCommand.DEVICE_GET_INFO, DEVICE_INFO_SIZE), {
    argsz,
    flags: 0,
    numRegions: 0,
    numIrqs: 0,
  });
}

export function encodeDeviceInfoReply(id: number, m: DeviceInfoMessage): Uint8Array {
  return DEVICE_INFO.encodeInto(newReply(id, VfioUserCommand.DEVICE_GET_INFO, DEVICE_INFO_SIZE), m);
}

/** Request and reply share the layout. EINVAL if the payload is shorter than 16 bytes. */
export function decodeDeviceInfo(msg: Uint8Array): DeviceInfoMessage {
  return DEVICE_INFO.decode(msg, VfioUserCommand.DEVICE_GET_INFO);
}

export function encodeDeviceResetRequest(id: number, noReply = false): Uint8Array {
  return encodeEmptyRequest(id, VfioUserCommand.DEVICE_RESET, noReply);
}

export function encodeDeviceResetReply(id: number): Uint8Array {
  return encodeEmptyReply(id, VfioUserCommand.DEVICE_RESET);
}
