/** DMA_READ and DMA_WRITE (server to client): address, count, the data's first bytes. */
import { dataHex, hex, type TraceFields } from '../fields.js';
import { u64 } from './bytes.js';

function access(msg: Uint8Array, out: TraceFields): void {
  out.addr = hex(u64(msg, 16));
  const count = u64(msg, 24);
  out.count = count > 0xffffffffn ? hex(count) : Number(count);
}

/** READ request, WRITE reply. */
export function traceDmaAccess(msg: Uint8Array, out: TraceFields): void {
  if (msg.byteLength === 16) return; // an older client's header-only DMA_WRITE reply
  access(msg, out);
}

/** WRITE request, READ reply. */
export function traceDmaData(msg: Uint8Array, out: TraceFields): void {
  access(msg, out);
  out.data = dataHex(msg.subarray(32));
}
