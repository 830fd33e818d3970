/**
 * Names a trace prints instead of numbers: regions (config, BAR0..BAR5, ROM,
 * VGA, MIGR), IRQ indexes, errnos, and flag words ('READ|WRITE').
 */
import { constants } from 'node:os';
import { PciIrq, PciRegion } from '../protocol/constants.js';

/** libvfio-user's migration region (VFU_PCI_DEV_MIGR_REGION_IDX, migration v1): the index after VGA. */
const MIGRATION_REGION = PciRegion.COUNT;

const REGION_NAMES: Record<number, string> = {
  [PciRegion.BAR0]: 'BAR0',
  [PciRegion.BAR1]: 'BAR1',
  [PciRegion.BAR2]: 'BAR2',
  [PciRegion.BAR3]: 'BAR3',
  [PciRegion.BAR4]: 'BAR4',
  [PciRegion.BAR5]: 'BAR5',
  [PciRegion.ROM]: 'ROM',
  [PciRegion.CONFIG]: 'config',
  [PciRegion.VGA]: 'VGA',
  [MIGRATION_REGION]: 'MIGR',
};

/** 'BAR0', 'config', ..., or 'region12' for a device-specific index. */
export function regionName(index: number): string {
  return REGION_NAMES[index] ?? `region${index}`;
}

/** The index a region name stands for ('bar0', 'CONFIG', 'region12', '3'), or undefined. */
export function regionIndex(name: string): number | undefined {
  const lower = name.trim().toLowerCase();
  for (const [index, n] of Object.entries(REGION_NAMES)) if (n.toLowerCase() === lower) return Number(index);
  const m = /^(?:region)?(\d{1,10})$/.exec(lower);
  return m ? Number(m[1]) : undefined;
}

const IRQ_NAMES: Record<number, string> = {
  [PciIrq.INTX]: 'INTX',
  [PciIrq.MSI]: 'MSI',
  [PciIrq.MSIX]: 'MSIX',
  [PciIrq.ERR]: 'ERR',
  [PciIrq.REQ]: 'REQ',
};

/** 'INTX', 'MSI', 'MSIX', 'ERR', 'REQ', or 'irq7'. */
export function irqName(index: number): string {
  return IRQ_NAMES[index] ?? `irq${index}`;
}

/** Every Linux errno name Node knows (os.constants.errno), by value; the first name wins (EAGAIN over EWOULDBLOCK). */
const ERRNO_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) if (!ERRNO_NAMES.has(value)) ERRNO_NAMES.set(value, name);

/** 'EINVAL', or 'E<n>' for a number Linux does not name. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

/**
 * The set bits of `value` by name, 'A|B', unknown bits as hex ('A|0x40');
 * '0' when none. `names` lists single-bit values.
 */
export function flagNames(value: number, names: Readonly<Record<string, number>>): string {
  const parts: string[] = [];
  let rest = value >>> 0;
  for (const [name, bit] of Object.entries(names)) {
    if (bit !== 0 && (bit & (bit - 1)) === 0 && (rest & bit) !== 0) {
      parts.push(name);
      rest = (rest & ~bit) >>> 0;
    }
  }
  if (rest !== 0) parts.push(`0x${rest.toString(16)}`);
  return parts.length === 0 ? '0' : parts.join('|');
}
