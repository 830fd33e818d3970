/** DEVICE_GET_IRQ_INFO and DEVICE_SET_IRQS: index by name, flags, start, count (the fds are the message's). */
import { IrqInfoFlag, IrqSetFlag } from '../../protocol/constants.js';
import { dataHex, type TraceFields } from '../fields.js';
import { flagNames, irqName } from '../names.js';
import { u32 } from './bytes.js';

const SET_FLAGS = {
  DATA_NONE: IrqSetFlag.DATA_NONE,
  DATA_BOOL: IrqSetFlag.DATA_BOOL,
  DATA_EVENTFD: IrqSetFlag.DATA_EVENTFD,
  ACTION_MASK: IrqSetFlag.ACTION_MASK,
  ACTION_UNMASK: IrqSetFlag.ACTION_UNMASK,
  ACTION_TRIGGER: IrqSetFlag.ACTION_TRIGGER,
};

export function traceIrqInfoRequest(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  out.index = irqName(u32(msg, 24));
  out.argsz = argsz;
}

export function traceIrqInfoReply(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  const flags = u32(msg, 20);
  out.index = irqName(u32(msg, 24));
  out.count = u32(msg, 28);
  out.flags = flagNames(flags, IrqInfoFlag);
  out.argsz = argsz;
}

export function traceSetIrqsRequest(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  const flags = u32(msg, 20);
  out.index = irqName(u32(msg, 24));
  out.flags = flagNames(flags, SET_FLAGS);
  out.start = u32(msg, 28);
  out.count = u32(msg, 32);
  out.argsz = argsz;
  const data = msg.subarray(36);
  if (data.byteLength > 0) out.data = dataHex(data);
}
