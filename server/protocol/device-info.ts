/**
 * DEVICE_GET_INFO (4), DEVICE_GET_IRQ_INFO (7) and DEVICE_SET_IRQS (8).
 *
 * GET_INFO: argsz u32 @0, flags u32 @4, num_regions u32 @8, num_irqs u32 @12 (request and reply).
 * GET_IRQ_INFO: argsz u32 @0, flags u32 @4, index u32 @8, count u32 @12 (request and reply).
 * SET_IRQS: argsz u32 @0, flags u32 @4, index u32 @8, start u32 @12, count u32 @16, data @20 (DATA_BOOL only); reply: header only.
 */
import { Command } from './constants.js';
import { newReply, newRequest, requirePayload } from './header.js';

export const DEVICE_INFO_SIZE = 16;
export const IRQ_INFO_SIZE = 16;
export const SET_IRQS_SIZE = 20;

export interface DeviceInfoMessage {
  argsz: number;
  /** DeviceFlag bits. */
  flags: number;
  numRegions: number;
  numIrqs: number;
}

export interface IrqInfoMessage {
  argsz: number;
  /** IrqInfoFlag bits (reply). */
  flags: number;
  index: number;
  count: number;
}

export interface SetIrqsMessage {
  argsz: number;
  /** IrqSetFlag bits. */
  flags: number;
  index: number;
  start: number;
  count: number;
  /** Bytes after the fixed part (DATA_BOOL: one byte per vector). */
  data: Uint8Array;
}

function enc4(make: ReturnType<typeof newRequest>, a: number, b: number, c: number, d: number): Uint8Array {
  make.view.setUint32(16, a >>> 0, true);
  make.view.setUint32(20, b >>> 0, true);
  make.view.setUint32(24, c >>> 0, true);
  make.view.setUint32(28, d >>> 0, true);
  return make.bytes;
}

export function encodeDeviceInfoRequest(id: number, argsz = DEVICE_INFO_SIZE): Uint8Array {
  return enc4(newRequest(id, Command.DEVICE_GET_INFO, DEVICE_INFO_SIZE), argsz, 0, 0, 0);
}

export function encodeDeviceInfoReply(id: number, m: DeviceInfoMessage): Uint8Array {
  return enc4(newReply(id, Command.DEVICE_GET_INFO, DEVICE_INFO_SIZE), m.argsz, m.flags, m.numRegions, m.numIrqs);
}

/** Request and reply share the layout. EINVAL if the payload is shorter than 16 bytes. */
export function decodeDeviceInfo(msg: Uint8Array): DeviceInfoMessage {
  const dv = requirePayload(msg, DEVICE_INFO_SIZE, Command.DEVICE_GET_INFO);
  return {
    argsz: dv.getUint32(16, true),
    flags: dv.getUint32(20, true),
    numRegions: dv.getUint32(24, true),
    numIrqs: dv.getUint32(28, true),
  };
}

export function encodeIrqInfoRequest(id: number, index: number, argsz = IRQ_INFO_SIZE): Uint8Array {
  return enc4(newRequest(id, Command.DEVICE_GET_IRQ_INFO, IRQ_INFO_SIZE), argsz, 0, index, 0);
}

export function encodeIrqInfoReply(id: number, m: IrqInfoMessage): Uint8Array {
  return enc4(newReply(id, Command.DEVICE_GET_IRQ_INFO, IRQ_INFO_SIZE), m.argsz, m.flags, m.index, m.count);
}

/** Request and reply share the layout. EINVAL if the payload is shorter than 16 bytes. */
export function decodeIrqInfo(msg: Uint8Array): IrqInfoMessage {
  const dv = requirePayload(msg, IRQ_INFO_SIZE, Command.DEVICE_GET_IRQ_INFO);
  return {
    argsz: dv.getUint32(16, true),
    flags: dv.getUint32(20, true),
    index: dv.getUint32(24, true),
    count: dv.getUint32(28, true),
  };
}

export function encodeSetIrqsRequest(
  id: number,
  m: Omit<SetIrqsMessage, 'argsz' | 'data'> & { argsz?: number; data?: Uint8Array },
): Uint8Array {
  const data = m.data ?? new Uint8Array(0);
  const msg = newRequest(id, Command.DEVICE_SET_IRQS, SET_IRQS_SIZE + data.byteLength);
  msg.view.setUint32(16, m.argsz ?? SET_IRQS_SIZE + data.byteLength, true);
  msg.view.setUint32(20, m.flags >>> 0, true);
  msg.view.setUint32(24, m.index >>> 0, true);
  msg.view.setUint32(28, m.start >>> 0, true);
  msg.view.setUint32(32, m.count >>> 0, true);
  msg.bytes.set(data, 36);
  return msg.bytes;
}

/** EINVAL if the payload is shorter than 20 bytes. `data` is a view into `msg`. */
export function decodeSetIrqsRequest(msg: Uint8Array): SetIrqsMessage {
  const dv = requirePayload(msg, SET_IRQS_SIZE, Command.DEVICE_SET_IRQS);
  return {
    argsz: dv.getUint32(16, true),
    flags: dv.getUint32(20, true),
    index: dv.getUint32(24, true),
    start: dv.getUint32(28, true),
    count: dv.getUint32(32, true),
    data: msg.subarray(16 + SET_IRQS_SIZE),
  };
}

/** The SET_IRQS reply is the header alone. */
export function encodeSetIrqsReply(id: number): Uint8Array {
  return newReply(id, Command.DEVICE_SET_IRQS, 0).bytes;
}
