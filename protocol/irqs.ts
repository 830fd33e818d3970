/**
 * DEVICE_GET_IRQ_INFO (7) and DEVICE_SET_IRQS (8).
 *
 * GET_IRQ_INFO: argsz u32 @0, flags u32 @4, index u32 @8, count u32 @12 (request and reply).
 * SET_IRQS: argsz u32 @0, flags u32 @4, index u32 @8, start u32 @12, count u32 @16, data @20 (DATA_BOOL only);
 * reply: header only. The eventfds (DATA_EVENTFD) travel as the message's fds.
 */
import { HEADER_SIZE, VfioUserCommand } from './constants.js';
import { newReply, newRequest } from './header.js';
import { defineStruct } from './struct.js';

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

const IRQ_INFO = defineStruct<IrqInfoMessage>({ argsz: 'u32', flags: 'u32', index: 'u32', count: 'u32' });
/** SET_IRQS without its trailing data. */
const SET_IRQS = defineStruct<Omit<SetIrqsMessage, 'data'>>({
  argsz: 'u32',
  flags: 'u32',
  index: 'u32',
  start: 'u32',
  count: 'u32',
});

export const IRQ_INFO_SIZE = IRQ_INFO.size;
export const SET_IRQS_SIZE = SET_IRQS.size;

export function encodeIrqInfoRequest(id: number, index: number, argsz = IRQ_INFO_SIZE): Uint8Array {
  return IRQ_INFO.encodeInto(newRequest(id, VfioUserCommand.DEVICE_GET_IRQ_INFO, IRQ_INFO_SIZE), {
    argsz,
    flags: 0,
    index,
    count: 0,
  });
}

export function encodeIrqInfoReply(id: number, m: IrqInfoMessage): Uint8Array {
  return IRQ_INFO.encodeInto(newReply(id, VfioUserCommand.DEVICE_GET_IRQ_INFO, IRQ_INFO_SIZE), m);
}

/** Request and reply share the layout. EINVAL if the payload is shorter than 16 bytes. */
export function decodeIrqInfo(msg: Uint8Array): IrqInfoMessage {
  return IRQ_INFO.decode(msg, VfioUserCommand.DEVICE_GET_IRQ_INFO);
}

export function encodeSetIrqsRequest(
  id: number,
  // argsz and data undefined: the computed argsz, no data.
  m: Omit<SetIrqsMessage, 'argsz' | 'data'> & { argsz?: number | undefined; data?: Uint8Array | undefined },
): Uint8Array {
  const data = m.data ?? new Uint8Array(0);
  const msg = newRequest(id, VfioUserCommand.DEVICE_SET_IRQS, SET_IRQS_SIZE + data.byteLength);
  msg.bytes.set(data, HEADER_SIZE + SET_IRQS_SIZE);
  return SET_IRQS.encodeInto(msg, {
    argsz: m.argsz ?? SET_IRQS_SIZE + data.byteLength,
    flags: m.flags,
    index: m.index,
    start: m.start,
    count: m.count,
  });
}

/** EINVAL if the payload is shorter than 20 bytes. `data` is a view into `msg`. */
export function decodeSetIrqsRequest(msg: Uint8Array): SetIrqsMessage {
  const fixed = SET_IRQS.decode(msg, VfioUserCommand.DEVICE_SET_IRQS);
  return { ...fixed, data: msg.subarray(HEADER_SIZE + SET_IRQS_SIZE) };
}

/** The SET_IRQS reply is the header alone. */
export function encodeSetIrqsReply(id: number): Uint8Array {
  return newReply(id, VfioUserCommand.DEVICE_SET_IRQS, 0).bytes;
}
