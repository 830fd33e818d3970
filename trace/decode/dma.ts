/** DMA_MAP and DMA_UNMAP: the range, its protection and flags, the dirty bitmap of an unmap. */
import { DmaMapFlag, DmaUnmapFlag } from '../../protocol/constants.js';
import { hex, type TraceFields } from '../fields.js';
import { flagNames } from '../names.js';
import { countBits, u32, u64 } from './bytes.js';

/** 'rw', 'r-', '-w' or '--' from DMA_MAP's READ and WRITE bits. */
function protection(flags: number): string {
  return `${flags & DmaMapFlag.READ ? 'r' : '-'}${flags & DmaMapFlag.WRITE ? 'w' : '-'}`;
}

export function traceDmaMapRequest(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  const flags = u32(msg, 20);
  out.addr = hex(u64(msg, 32));
  out.size = hex(u64(msg, 40));
  out.prot = protection(flags);
  out.flags = flagNames(flags, DmaMapFlag);
  out.offset = hex(u64(msg, 24));
  out.argsz = argsz;
}

export function traceDmaUnmap(msg: Uint8Array, out: TraceFields): void {
  const argsz = u32(msg, 16);
  const flags = u32(msg, 20);
  out.addr = hex(u64(msg, 24));
  out.size = hex(u64(msg, 32));
  out.flags = flagNames(flags, DmaUnmapFlag);
  out.argsz = argsz;
  if ((flags & DmaUnmapFlag.GET_DIRTY_BITMAP) === 0) return;
  out.pgsize = hex(u64(msg, 40));
  out.bitmapSize = Number(u64(msg, 48) & 0xffffffffn);
  const bitmap = msg.subarray(56);
  if (bitmap.byteLength > 0) {
    const { bits, partial } = countBits(bitmap);
    out.dirtyPages = partial ? `${bits}+` : bits;
  }
}
