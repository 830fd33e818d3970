/**
 * Power Management capability (PM 1.2): D0 and D3hot only, No_Soft_Reset set
 * (leaving D3hot keeps device state, so no reset event is needed). Writing an
 * unsupported state (D1/D2) is ignored, as the spec requires.
 */
import type { ConfigSpace } from '../config-space.js';
import { CapId, type Capability } from './capability.js';

const PMC = 2;
const PMCSR = 4;
const STATE_MASK = 0x3;
const NO_SOFT_RESET = 1 << 3;

export function powerManagementCapability(): Capability {
  return {
    id: CapId.PM,
    length: 8,
    install(cs: ConfigSpace, at: number): void {
      cs.setU16(at + PMC, 0x0003); // version 3, no D1/D2, no PME
      cs.setU16(at + PMCSR, NO_SOFT_RESET);
      cs.setMask(at + PMCSR, 2, STATE_MASK);
      cs.onWrite(at + PMCSR, 1, ({ before }) => {
        const state = cs.u8(at + PMCSR) & STATE_MASK;
        if (state === 1 || state === 2) cs.setU8(at + PMCSR, before[0]!);
      });
    },
  };
}
