/**
 * Vendor-specific capabilities: standard (id 0x09: id, next, length, data)
 * and extended (id 0x000b: header, VSEC id/rev/length, data). Read-only
 * unless the author passes per-byte writable masks.
 */
import type { ConfigSpace } from '../config-space.js';
import { CapId, ExtCapId, type Capability, type ExtendedCapability } from './capability.js';

export function vendorCapability(
  data: Uint8Array,
  writable?: Uint8Array,
  onWrite?: (bytes: Uint8Array) => void | Promise<void>,
): Capability {
  const length = 3 + data.length;
  if (length > 0xff) throw new Error('PciDevice: vendor capability data longer than 252 bytes');
  if (writable && writable.length > data.length)
    throw new Error('PciDevice: vendor capability writable mask longer than its data');
  return {
    id: CapId.VENDOR,
    length,
    install(cs: ConfigSpace, at: number): void {
      cs.setU8(at + 2, length);
      cs.bytes.set(data, at + 3);
      if (writable) cs.setWritableBytes(at + 3, writable);
      if (onWrite && data.length > 0)
        cs.onWrite(at + 3, data.length, () => onWrite(cs.bytes.slice(at + 3, at + 3 + data.length)));
    },
  };
}

export function vendorExtendedCapability(id: number, revision: number, data: Uint8Array): ExtendedCapability {
  const length = 8 + data.length;
  if (length > 0xfff) throw new Error('PciDevice: extended vendor capability too long');
  return {
    id: ExtCapId.VENDOR,
    version: 1,
    length,
    install(cs: ConfigSpace, at: number): void {
      cs.setU32(at + 4, (id & 0xffff) | ((revision & 0xf) << 16) | (length << 20));
      cs.bytes.set(data, at + 8);
    },
  };
}
