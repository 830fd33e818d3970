/**
 * DMA_MAP (2) and DMA_UNMAP (3): the client adds or removes a range of its
 * (guest-physical or IO-virtual) address space.
 *
 * DMA_MAP request: argsz u32 @0, flags u32 @4, offset u64 @8, addr u64 @16, size u64 @24 (+ 0 or 1 fd); reply: header only.
 * DMA_UNMAP request: argsz u32 @0, flags u32 @4, addr u64 @8, size u64 @16 [+ bitmap {pgsize u64, size u64, data}
 * when GET_DIRTY_BITMAP]; reply: the same struct echoed.
 */
import { Command, DmaUnmapFlag } from './constants.js';
import { newReply, newRequest, requirePayload } from './header.js';
import { ProtocolError } from './errors.js';

export const DMA_MAP_SIZE = 32;
export const DMA_UNMAP_SIZE = 24;
export const DMA_BITMAP_SIZE = 16;

export interface DmaMapMessage {
  argsz: number;
  /** DmaMapFlag bits. */
  flags: number;
  /** Offset into the fd. */
  offset: bigint;
  addr: bigint;
  size: bigint;
}

export interface DmaBitmap {
  pgsize: bigint;
  /** Bitmap size in bytes. */
  size: bigint;
  /** Bitmap bytes (in a reply; absent or empty in a request). */
  data?: Uint8Array;
}

export interface DmaUnmapMessage {
  argsz: number;
  /** DmaUnmapFlag bits. */
  flags: number;
  addr: bigint;
  size: bigint;
  /** Present when flags has GET_DIRTY_BITMAP. */
  bitmap?: DmaBitmap;
}

export function encodeDmaMapRequest(id: number, m: Omit<DmaMapMessage, 'argsz'> & { argsz?: number }): Uint8Array {
  const { bytes, view } = newRequest(id, Command.DMA_MAP, DMA_MAP_SIZE);
  view.setUint32(16, m.argsz ?? DMA_MAP_SIZE, true);
  view.setUint32(20, m.flags, true);
  view.setBigUint64(24, m.offset, true);
  view.setBigUint64(32, m.addr, true);
  view.setBigUint64(40, m.size, true);
  return bytes;
}

/** EINVAL if the payload is shorter than 32 bytes. argsz and flags are checked by the caller. */
export function decodeDmaMapRequest(msg: Uint8Array): DmaMapMessage {
  const dv = requirePayload(msg, DMA_MAP_SIZE, Command.DMA_MAP);
  return {
    argsz: dv.getUint32(16, true),
    flags: dv.getUint32(20, true),
    offset: dv.getBigUint64(24, true),
    addr: dv.getBigUint64(32, true),
    size: dv.getBigUint64(40, true),
  };
}

function unmapPayloadSize(m: DmaUnmapMessage): number {
  return DMA_UNMAP_SIZE + (m.bitmap ? DMA_BITMAP_SIZE + (m.bitmap.data?.byteLength ?? 0) : 0);
}

function writeUnmap(view: DataView, bytes: Uint8Array, m: DmaUnmapMessage): void {
  view.setUint32(16, m.argsz, true);
  view.setUint32(20, m.flags, true);
  view.setBigUint64(24, m.addr, true);
  view.setBigUint64(32, m.size, true);
  if (m.bitmap) {
    view.setBigUint64(40, m.bitmap.pgsize, true);
    view.setBigUint64(48, m.bitmap.size, true);
    if (m.bitmap.data) bytes.set(m.bitmap.data, 56);
  }
}

export function encodeDmaUnmapRequest(id: number, m: Omit<DmaUnmapMessage, 'argsz'> & { argsz?: number }): Uint8Array {
  const full: DmaUnmapMessage = { ...m, argsz: m.argsz ?? DMA_UNMAP_SIZE + (m.bitmap ? DMA_BITMAP_SIZE + Number(m.bitmap.size) : 0) };
  const req: DmaUnmapMessage = m.bitmap ? { ...full, bitmap: { pgsize: m.bitmap.pgsize, size: m.bitmap.size } } : full;
  const { bytes, view } = newRequest(id, Command.DMA_UNMAP, unmapPayloadSize(req));
  writeUnmap(view, bytes, req);
  return bytes;
}

export function encodeDmaUnmapReply(id: number, m: DmaUnmapMessage): Uint8Array {
  const { bytes, view } = newReply(id, Command.DMA_UNMAP, unmapPayloadSize(m));
  writeUnmap(view, bytes, m);
  return bytes;
}

function decodeUnmap(msg: Uint8Array): DmaUnmapMessage {
  const dv = requirePayload(msg, DMA_UNMAP_SIZE, Command.DMA_UNMAP);
  const m: DmaUnmapMessage = {
    argsz: dv.getUint32(16, true),
    flags: dv.getUint32(20, true),
    addr: dv.getBigUint64(24, true),
    size: dv.getBigUint64(32, true),
  };
  if (m.flags & DmaUnmapFlag.GET_DIRTY_BITMAP) {
    if (msg.byteLength < 16 + DMA_UNMAP_SIZE + DMA_BITMAP_SIZE) {
      throw ProtocolError.invalid('DMA_UNMAP: GET_DIRTY_BITMAP without a bitmap struct');
    }
    const data = msg.subarray(16 + DMA_UNMAP_SIZE + DMA_BITMAP_SIZE);
    m.bitmap = { pgsize: dv.getBigUint64(40, true), size: dv.getBigUint64(48, true), data };
  }
  return m;
}

/** EINVAL if shorter than 24 bytes (or 40 with GET_DIRTY_BITMAP). */
export function decodeDmaUnmapRequest(msg: Uint8Array): DmaUnmapMessage {
  return decodeUnmap(msg);
}

export function decodeDmaUnmapReply(msg: Uint8Array): DmaUnmapMessage {
  return decodeUnmap(msg);
}

/** The DMA_MAP reply is the header alone. */
export function encodeDmaMapReply(id: number): Uint8Array {
  return newReply(id, Command.DMA_MAP, 0).bytes;
}

