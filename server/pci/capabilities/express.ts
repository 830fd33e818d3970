/**
 * PCI Express capability (version 2) for an endpoint: device capabilities
 * (max payload, role-based error reporting, FLR), device control/status
 * (writable enables, RW1C error bits), and a x1 2.5 GT/s link (no link
 * registers for a root-complex integrated endpoint). Writing 1 to Initiate
 * Function Level Reset (device control bit 15, always reads 0) calls `onFlr`.
 */
import { wroteBit, type ConfigSpace } from '../config-space.js';
import type { ExpressOptions } from '../types.js';
import { CapId, type Capability } from './capability.js';

/** Register offsets inside the capability. */
export const ExpressReg = {
  CAPS: 0x02,
  DEVCAP: 0x04,
  DEVCTL: 0x08,
  DEVSTA: 0x0a,
  LNKCAP: 0x0c,
  LNKCTL: 0x10,
  LNKSTA: 0x12,
  DEVCAP2: 0x24,
  DEVCTL2: 0x28,
  LNKCAP2: 0x2c,
  LNKCTL2: 0x30,
  LNKSTA2: 0x32,
} as const;

const DEVCAP_FLR = 1 << 28;
/** Device control bit 15, Initiate Function Level Reset (bit 7 of the register's upper byte). */
const DEVCTL_INITIATE_FLR_BIT = 15;
const DEVCAP_ROLE_BASED_ERRORS = 1 << 15;
/** Error enables, relaxed ordering, max payload, extended tags, aux power, no snoop, max read request. */
const DEVCTL_WRITABLE = 0x000f | 0x0010 | 0x00e0 | 0x0100 | 0x0400 | 0x0800 | 0x7000;
/** Relaxed ordering, no snoop, 512-byte max read request: the usual reset value. */
const DEVCTL_DEFAULT = 0x0010 | 0x0800 | 0x2000;
const DEVSTA_RW1C = 0x000f;
/** ASPM control, read completion boundary, common clock, extended synch. */
const LNKCTL_WRITABLE = 0x0003 | 0x0008 | 0x0040 | 0x0080;

const PORT_TYPE = { endpoint: 0x0, 'legacy-endpoint': 0x1, 'rc-endpoint': 0x9 } as const;

export function expressCapability(options: ExpressOptions, onFlr: () => void): Capability {
  const type = options.type ?? 'endpoint';
  const flr = options.flr ?? true;
  const mps = options.maxPayload ?? 256;
  if (![128, 256, 512, 1024, 2048, 4096].includes(mps)) throw new Error(`PciDevice: express.maxPayload ${mps} invalid`);
  return {
    id: CapId.EXPRESS,
    length: 0x3c,
    install(cs: ConfigSpace, at: number): void {
      cs.setU16(at + ExpressReg.CAPS, 0x2 | (PORT_TYPE[type] << 4));
      cs.setU32(at + ExpressReg.DEVCAP, (Math.log2(mps) - 7) | DEVCAP_ROLE_BASED_ERRORS | (flr ? DEVCAP_FLR : 0));
      cs.setU16(at + ExpressReg.DEVCTL, DEVCTL_DEFAULT);
      cs.setMask(at + ExpressReg.DEVCTL, 2, DEVCTL_WRITABLE);
      cs.setMask(at + ExpressReg.DEVSTA, 2, 0, DEVSTA_RW1C);
      if (type !== 'rc-endpoint') {
        cs.setU32(at + ExpressReg.LNKCAP, 0x1 | (0x1 << 4)); // 2.5 GT/s, x1, port 0
        cs.setMask(at + ExpressReg.LNKCTL, 2, LNKCTL_WRITABLE);
        cs.setU16(at + ExpressReg.LNKSTA, 0x1 | (0x1 << 4));
        cs.setU32(at + ExpressReg.LNKCAP2, 0x2); // supports 2.5 GT/s
        cs.setU16(at + ExpressReg.LNKCTL2, 0x1);
        cs.setMask(at + ExpressReg.LNKCTL2, 2, 0x000f);
      }
      if (flr) {
        const flrByte = at + ExpressReg.DEVCTL + (DEVCTL_INITIATE_FLR_BIT >> 3);
        cs.onWrite(flrByte, 1, (write) => {
          if (wroteBit(write, flrByte, DEVCTL_INITIATE_FLR_BIT & 7)) onFlr();
        });
      }
    },
  };
}
