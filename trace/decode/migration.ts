/** MIG_DATA_READ and MIG_DATA_WRITE: sizes and the stream's first bytes. */
import { dataHex, type TraceFields } from '../fields.js';
import { u32 } from './bytes.js';

/** READ request: the size asked for. */
export function traceMigDataRequest(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  out.size = u32(msg, 20);
  out.argsz = argsz;
}

/** READ reply, WRITE request: the size and data (a READ reply shorter than asked ends the stream). */
export function traceMigData(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  const size = u32(msg, 20);
  out.size = size;
  out.argsz = argsz;
  out.data = dataHex(msg.subarray(24, 24 + size));
}
