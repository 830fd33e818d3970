/**
 * The type-0 configuration header (0x00-0x3f): ids, class, command/status
 * with their writable and RW1C bits, BARs and ROM BAR whose writable masks
 * implement sizing (write all-ones, read back the size mask and type bits),
 * interrupt line/pin. Read-only fields ignore writes, as on hardware
 * (libvfio-user answers EINVAL to unknown COMMAND bits and odd ROM BAR
 * values; a real function does not, and neither do we).
 */
import type { BarLayout } from './bar-layout.js';
import type { ConfigSpace } from './config-space.js';
import type { IntxPin, PciId } from './types.js';

export const Cfg = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION: 0x08,
  CLASS: 0x09,
  CACHE_LINE: 0x0c,
  LATENCY: 0x0d,
  HEADER_TYPE: 0x0e,
  BIST: 0x0f,
  BAR0: 0x10,
  SUBSYSTEM_VENDOR_ID: 0x2c,
  SUBSYSTEM_ID: 0x2e,
  ROM: 0x30,
  CAP_PTR: 0x34,
  INTERRUPT_LINE: 0x3c,
  INTERRUPT_PIN: 0x3d,
} as const;

/** Bits of the command register (Cfg.COMMAND). */
export const PciCommand = {
  IO: 1 << 0,
  MEMORY: 1 << 1,
  MASTER: 1 << 2,
  PARITY: 1 << 6,
  SERR: 1 << 8,
  INTX_DISABLE: 1 << 10,
} as const;

/** Bits of the status register (Cfg.STATUS). */
export const PciStatus = {
  INTERRUPT: 1 << 3,
  CAP_LIST: 1 << 4,
  /** Master data parity error, signaled/received target abort, received master abort, signaled system error, detected parity error. */
  RW1C: (1 << 8) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 15),
} as const;

export const BarBits = { IO: 0x1, MEM64: 0x4, PREFETCH: 0x8 } as const;
const ROM_ENABLE = 0x1;
const ROM_ADDRESS_MASK = 0xfffff800;

interface HeaderSpec {
  id: PciId;
  bars: readonly (BarLayout | undefined)[];
  romSize: number;
  intxPin: IntxPin | undefined;
  express: boolean;
}

/** Write the header's power-on values and masks into `cs`. */
export function buildHeader(cs: ConfigSpace, spec: HeaderSpec): void {
  const { id } = spec;
  cs.setU16(Cfg.VENDOR_ID, id.vendor & 0xffff);
  cs.setU16(Cfg.DEVICE_ID, id.device & 0xffff);
  cs.setU8(Cfg.REVISION, (id.revision ?? 0) & 0xff);
  cs.setU8(Cfg.CLASS, id.classCode & 0xff);
  cs.setU16(Cfg.CLASS + 1, (id.classCode >>> 8) & 0xffff);
  cs.setU16(Cfg.SUBSYSTEM_VENDOR_ID, (id.subsystemVendor ?? id.vendor) & 0xffff);
  cs.setU16(Cfg.SUBSYSTEM_ID, (id.subsystem ?? id.device) & 0xffff);
  cs.setU8(Cfg.HEADER_TYPE, 0x00);

  const hasIo = spec.bars.some((b) => b?.type === 'io');
  const hasMem = spec.bars.some((b) => b !== undefined && b.type !== 'io') || spec.romSize > 0;
  const command =
    (hasIo ? PciCommand.IO : 0) |
    (hasMem ? PciCommand.MEMORY : 0) |
    PciCommand.MASTER |
    PciCommand.PARITY |
    PciCommand.SERR |
    PciCommand.INTX_DISABLE;
  cs.setMask(Cfg.COMMAND, 2, command);
  cs.setMask(Cfg.STATUS, 2, 0, PciStatus.RW1C);
  cs.setMask(Cfg.CACHE_LINE, 1, 0xff);
  // Latency timer: read-only zero on PCI Express.
  if (!spec.express) cs.setMask(Cfg.LATENCY, 1, 0xff);
  cs.setMask(Cfg.INTERRUPT_LINE, 1, 0xff);
  cs.setU8(Cfg.INTERRUPT_PIN, spec.intxPin ? spec.intxPin.charCodeAt(0) - 0x40 : 0);

  for (let i = 0; i < 6; i++) {
    const bar = spec.bars[i];
    if (!bar) continue;
    const reg = Cfg.BAR0 + 4 * i;
    if (bar.type === 'io') {
      cs.setU32(reg, BarBits.IO);
      cs.setMask(reg, 4, (~(bar.size - 1) & 0xfffffffc) >>> 0);
      continue;
    }
    cs.setU32(reg, (bar.type === 'mem64' ? BarBits.MEM64 : 0) | (bar.prefetchable ? BarBits.PREFETCH : 0));
    const lowMask = bar.size >= 2 ** 32 ? 0 : (~(bar.size - 1) & 0xfffffff0) >>> 0;
    cs.setMask(reg, 4, lowMask);
    if (bar.type === 'mem64') {
      const highMask = bar.size > 2 ** 32 ? (~(bar.size / 2 ** 32 - 1) & 0xffffffff) >>> 0 : 0xffffffff;
      cs.setMask(reg + 4, 4, highMask);
    }
  }
  if (spec.romSize > 0) cs.setMask(Cfg.ROM, 4, ((~(spec.romSize - 1) & ROM_ADDRESS_MASK) | ROM_ENABLE) >>> 0);
}
