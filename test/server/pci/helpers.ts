/** Small helpers for driving a PciDevice as an Endpoint in tests. */
import type { Endpoint } from '../../../server/endpoint.js';
import { PciRegion } from '../../../protocol/constants.js';

export async function cfgRead(dev: Endpoint, offset: number, size: 1 | 2 | 4): Promise<number> {
  const bytes = await dev.regionRead(PciRegion.CONFIG, BigInt(offset), size);
  return leValue(bytes);
}

export async function cfgWrite(dev: Endpoint, offset: number, size: 1 | 2 | 4, value: number): Promise<void> {
  await dev.regionWrite(PciRegion.CONFIG, BigInt(offset), leBytes(value, size));
}

export function leValue(bytes: Uint8Array): number {
  let v = 0;
  for (let i = bytes.length - 1; i >= 0; i--) v = v * 256 + bytes[i]!;
  return v;
}

export function leBytes(value: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let v = value;
  for (let i = 0; i < size; i++) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
  return out;
}
