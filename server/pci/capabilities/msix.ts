/**
 * MSI-X capability: table size, function mask and enable (the only writable
 * bits), table and PBA offset/BIR. QEMU reads these at realize to overlay its
 * own table emulation, then emulates the capability.
 */
import type { ConfigSpace } from '../config-space.js';
import type { MsixLayout } from '../bar-layout.js';
import { CapId, type Capability } from './capability.js';

const MsixControl = { FUNCTION_MASK: 1 << 14, ENABLE: 1 << 15 } as const;

export function msixCapability(layout: MsixLayout): Capability {
  return {
    id: CapId.MSIX,
    length: 12,
    install(cs: ConfigSpace, at: number): void {
      cs.setU16(at + 2, layout.vectors - 1);
      cs.setMask(at + 2, 2, MsixControl.FUNCTION_MASK | MsixControl.ENABLE);
      cs.setU32(at + 4, layout.tableOffset | layout.tableBar);
      cs.setU32(at + 8, layout.pbaOffset | layout.pbaBar);
    },
  };
}
