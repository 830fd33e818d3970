/** Device Serial Number extended capability: a read-only 64-bit serial (EUI-64). */
import type { ConfigSpace } from '../config-space.js';
import { ExtCapId, type ExtendedCapability } from './capability.js';

export function serialNumberCapability(serial: bigint): ExtendedCapability {
  const s = BigInt.asUintN(64, serial);
  return {
    id: ExtCapId.DSN,
    version: 1,
    length: 12,
    install(cs: ConfigSpace, at: number): void {
      cs.setU32(at + 4, Number(s & 0xffffffffn));
      cs.setU32(at + 8, Number(s >> 32n));
    },
  };
}
