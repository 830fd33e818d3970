/**
 * DMA_MAP (2) and DMA_UNMAP (3): the client adds or removes a range of its
 * (guest-physical or IO-virtual) address space.
 *
 * DMA_MAP request: argsz u32 @0, flags u32 @4, offset u64 @8, addr u64 @16, size u64 @24 (+ 0 or 1 fd); reply: header only.
 * DMA_UNMAP request: argsz u32 @0, flags u32 @4, addr u64 @8, size u64 @16 [+ bitmap {pgsize u64, size u64, data}
 * when GET_DIRTY_BITMAP]; reply: the same struct echoed.
 */
import { VfioUserCommand, DmaUnmapFlag, HEADER_SIZE } from './constants.js';
import { dataView, newReply, newRequest } from './header.js';
import { ProtocolError } from './errors.js';
import { defineStruct } from './struct.js';

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

const DMA_MAP = defineStruct<DmaMapMessage>({ argsz: 'u32', flags: 'u32', offset: 'u64', addr: 'u64', size: 'u64' });
/** DMA_UNMAP without the optional bitmap. */
const DMA_UNMAP = defineStruct<Omit<DmaUnmapMessage, 'bitmap'>>({
  argsz: 'u32',
  flags: 'u32',
  addr: 'u64',
  size: 'u64',
});
/** The bitmap struct's fixed part (its bytes follow it). */
const DMA_BITMAP = defineStruct<Omit<DmaBitmap, 'data'>>({ pgsize: 'u64', size: 'u64' });

export const DMA_MAP_SIZE = DMA_MAP.size;
export const DMA_UNMAP_SIZE = DMA_UNMAP.size;
const DMA_BITMAP_SIZE = DMA_BITMAP.size;

export function encodeDmaMapRequest(id: number, m: Omit<DmaMapMessage, 'argsz'> & { argsz?: number }): Uint8Array {
  return DMA_MAP.encodeInto(newRequest(id, VfioUserCommand.DMA_MAP, DMA_MAP_SIZE), {
    ...m,
    argsz: m.argsz ?? DMA_MAP_SIZE,
  });
}

/** EINVAL if the payload is shorter than 32 bytes. argsz and flags are checked by the caller. */
export function decodeDmaMapRequest(msg: Uint8Array): DmaMapMessage {
  return DMA_MAP.decode(msg, VfioUserCommand.DMA_MAP);
}

function unmapPayloadSize(m: DmaUnmapMessage): number {
  return DMA_UNMAP_SIZE + (m.bitmap ? DMA_BITMAP_SIZE + (m.bitmap.data?.byteLength ?? 0) : 0);
}

const BITMAP_AT = HEADER_SIZE + DMA_UNMAP_SIZE;

function writeUnmap(view: DataView, bytes: Uint8Array, m: DmaUnmapMessage): void {
  DMA_UNMAP.write(view, HEADER_SIZE, m);
  if (m.bitmap) {
    DMA_BITMAP.write(view, BITMAP_AT, m.bitmap);
    if (m.bitmap.data) bytes.set(m.bitmap.data, BITMAP_AT + DMA_BITMAP_SIZE);
  }
}

export function encodeDmaUnmapRequest(id: number, m: Omit<DmaUnmapMessage, 'argsz'> & { argsz?: number }): Uint8Array {
  const full: DmaUnmapMessage = {
    ...m,
    argsz: m.argsz ?? DMA_UNMAP_SIZE + (m.bitmap ? DMA_BITMAP_SIZE + Number(m.bitmap.size) : 0),
  };
  const req: DmaUnmapMessage = m.bitmap ? { ...full, bitmap: { pgsize: m.bitmap.pgsize, size: m.bitmap.size } } : full;
  const { bytes, view } = newRequest(id, VfioUserCommand.DMA_UNMAP, unmapPayloadSize(req));
  writeUnmap(view, bytes, req);
  return bytes;
}

export function encodeDmaUnmapReply(id: number, m: DmaUnmapMessage): Uint8Array {
  const { bytes, view } = newReply(id, VfioUserCommand.DMA_UNMAP, unmapPayloadSize(m));
  writeUnmap(view, bytes, m);
  return bytes;
}

function decodeUnmap(msg: Uint8Array): DmaUnmapMessage {
  const m: DmaUnmapMessage = DMA_UNMAP.decode(msg, VfioUserCommand.DMA_UNMAP);
  if (m.flags & DmaUnmapFlag.GET_DIRTY_BITMAP) {
    if (msg.byteLength < BITMAP_AT + DMA_BITMAP_SIZE) {
      throw ProtocolError.invalid('DMA_UNMAP: GET_DIRTY_BITMAP without a bitmap struct');
    }
    const data = msg.subarray(BITMAP_AT + DMA_BITMAP_SIZE);
    m.bitmap = { ...DMA_BITMAP.read(dataView(msg), BITMAP_AT), data };
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
  return newReply(id, VfioUserCommand.DMA_MAP, 0).bytes;
}
