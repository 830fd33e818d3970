/**
 * Bounds-checked reads for the decoders. Offsets count from the start of the
 * message (the payload starts at 16). A short message throws, and the
 * decoder's caller keeps the fields decoded so far (decode/index.ts).
 */
import { HEADER_SIZE } from '../../protocol/constants.js';
import { readU32, readU64 } from '../../protocol/header.js';

/** Throw unless `msg` holds `end` bytes. */
function need(msg: Uint8Array, end: number): void {
  if (msg.byteLength < end)
    throw new Error(`truncated: ${Math.max(0, msg.byteLength - HEADER_SIZE)} payload bytes, need ${end - HEADER_SIZE}`);
}

export function u16(msg: Uint8Array, at: number): number {
  need(msg, at + 2);
  return msg[at]! | (msg[at + 1]! << 8);
}

export function u32(msg: Uint8Array, at: number): number {
  need(msg, at + 4);
  return readU32(msg, at);
}

export function u64(msg: Uint8Array, at: number): bigint {
  need(msg, at + 8);
  return readU64(msg, at);
}

/** The payload (everything after the header; empty for a short message). */
export function payload(msg: Uint8Array): Uint8Array {
  return msg.subarray(Math.min(HEADER_SIZE, msg.byteLength));
}

/** Set bits in the first `maxBytes` of a bitmap, and whether it was cut there (bounds the cost of a big bitmap). */
export function countBits(bitmap: Uint8Array, maxBytes = 65536): { bits: number; partial: boolean } {
  const n = Math.min(bitmap.byteLength, maxBytes);
  let bits = 0;
  for (let i = 0; i < n; i++) {
    let b = bitmap[i]!;
    while (b !== 0) {
      b &= b - 1;
      bits++;
    }
  }
  return { bits, partial: n < bitmap.byteLength };
}
