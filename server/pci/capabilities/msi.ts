/**
 * MSI capability: 1-32 vectors, 32/64-bit address, optional per-vector
 * masking. QEMU emulates it after realize; we keep a faithful copy (the
 * server sees every config write) so other clients and the device see the
 * same registers. Multiple Message Enable is clamped to what is capable.
 */
import type { ConfigSpace } from '../config-space.js';
import type { MsiOptions } from '../types.js';
import { CapId, type Capability } from './capability.js';

const MsiControl = { ENABLE: 1 << 0, ADDR64: 1 << 7, PER_VECTOR_MASK: 1 << 8 } as const;

/** Register offsets inside an MSI capability with these options. */
export function msiRegisters(options: MsiOptions): {
  control: number;
  address: number;
  data: number;
  mask?: number;
  pending?: number;
  length: number;
} {
  const a64 = options.address64 ?? true;
  const pvm = options.perVectorMask ?? true;
  const data = a64 ? 0x0c : 0x08;
  if (!pvm) return { control: 2, address: 4, data, length: data + 2 };
  return { control: 2, address: 4, data, mask: data + 4, pending: data + 8, length: data + 12 };
}

export function msiCapability(options: MsiOptions): Capability {
  const { vectors } = options;
  if (![1, 2, 4, 8, 16, 32].includes(vectors))
    throw new Error(`PciDevice: MSI vectors ${vectors} must be 1, 2, 4, 8, 16 or 32`);
  const regs = msiRegisters(options);
  const mmc = Math.log2(vectors);
  return {
    id: CapId.MSI,
    length: regs.length,
    install(cs: ConfigSpace, at: number): void {
      let control = mmc << 1;
      if (options.address64 ?? true) control |= MsiControl.ADDR64;
      if (regs.mask !== undefined) control |= MsiControl.PER_VECTOR_MASK;
      cs.setU16(at + regs.control, control);
      cs.setMask(at + regs.control, 2, MsiControl.ENABLE | 0x70);
      cs.onWrite(at + regs.control, 2, () => {
        const c = cs.u16(at + regs.control);
        if (((c >> 4) & 7) > mmc) cs.setU16(at + regs.control, (c & ~0x70) | (mmc << 4));
      });
      cs.setMask(at + regs.address, 4, 0xfffffffc);
      if (options.address64 ?? true) cs.setMask(at + 8, 4, 0xffffffff);
      cs.setMask(at + regs.data, 2, 0xffff);
      if (regs.mask !== undefined) cs.setMask(at + regs.mask, 4, vectors === 32 ? 0xffffffff : (1 << vectors) - 1);
    },
  };
}
