/**
 * Turns the author's BAR and MSI-X options into a checked layout: which
 * slots exist, their type bits and sizes, where the MSI-X table and PBA live,
 * and which page-aligned areas of each BAR are plain shared memory.
 * Every rule QEMU or the PCI spec imposes is checked here, at construction,
 * so a bad device fails in the author's terminal and not inside QEMU.
 */
import { Limits } from '../../protocol/constants.js';
import type { BarOptions, MemoryArea, MsixOptions } from './types.js';

/** Memory areas are mmapped by the client: whole pages of the size we advertise. */
const PAGE_SIZE = Limits.PGSIZE;

/** One BAR slot as the device model uses it. */
export interface BarLayout {
  index: number;
  size: number;
  type: 'mem32' | 'mem64' | 'io';
  prefetchable: boolean;
  /** The author's options (undefined for a BAR created for the MSI-X table). */
  options: BarOptions | undefined;
  /** Memory-backed areas (sorted, page-aligned, non-overlapping). */
  memory: MemoryArea[];
}

export interface MsixLayout {
  vectors: number;
  tableBar: number;
  tableOffset: number;
  pbaBar: number;
  pbaOffset: number;
}

export const msixTableBytes = (vectors: number): number => vectors * 16;
export const msixPbaBytes = (vectors: number): number => Math.ceil(vectors / 64) * 8;

const isPowerOfTwo = (n: number): boolean => Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;

export function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;
const alignDown = (n: number, a: number): number => Math.floor(n / a) * a;

function fail(message: string): never {
  throw new Error(`PciDevice: ${message}`);
}

/** Validate the declared BARs and add a dedicated MSI-X BAR if needed. Returns slots 0-5 (undefined = absent or upper half of a 64-bit BAR). */
export function layoutBars(
  bars: readonly BarOptions[],
  msix: MsixOptions | undefined,
): { bars: (BarLayout | undefined)[]; msix: MsixLayout | undefined } {
  const slots: (BarLayout | undefined)[] = new Array<BarLayout | undefined>(6).fill(undefined);
  const upper = new Set<number>();
  for (const b of bars) {
    const type = b.type ?? 'mem32';
    if (!Number.isInteger(b.index) || b.index < 0 || b.index > 5) fail(`BAR index ${b.index} is not 0-5`);
    if (slots[b.index] || upper.has(b.index)) fail(`BAR ${b.index} declared twice (or overlaps a 64-bit BAR)`);
    if (!isPowerOfTwo(b.size)) fail(`BAR ${b.index} size ${b.size} is not a power of two (QEMU aborts on those)`);
    if (type === 'io') {
      if (b.size < 4 || b.size > 256) fail(`I/O BAR ${b.index} size must be 4..256 bytes`);
      if (b.prefetchable) fail(`I/O BAR ${b.index} cannot be prefetchable`);
      if (b.memory) fail(`I/O BAR ${b.index} cannot be memory-backed`);
    } else {
      if (b.size < 16) fail(`memory BAR ${b.index} must be at least 16 bytes`);
      if (type === 'mem32' && b.size > 2 ** 31) fail(`mem32 BAR ${b.index} larger than 2 GiB: use mem64`);
    }
    if (type === 'mem64') {
      if (b.index === 5) fail('a 64-bit BAR cannot start at slot 5');
      if (slots[b.index + 1]) fail(`64-bit BAR ${b.index} overlaps BAR ${b.index + 1}`);
      upper.add(b.index + 1);
    }
    slots[b.index] = {
      index: b.index,
      size: b.size,
      type,
      prefetchable: b.prefetchable ?? false,
      options: b,
      memory: [],
    };
  }
  for (const u of upper) if (slots[u]) fail(`BAR ${u} is the upper half of 64-bit BAR ${u - 1}`);

  let msixLayout: MsixLayout | undefined;
  if (msix) {
    const { vectors } = msix;
    if (!Number.isInteger(vectors) || vectors < 1 || vectors > 2048) fail(`MSI-X vectors ${vectors} not in 1..2048`);
    const tableBytes = msixTableBytes(vectors);
    const pbaBytes = msixPbaBytes(vectors);
    if (upper.has(msix.bar)) fail(`MSI-X BAR ${msix.bar} is the upper half of a 64-bit BAR`);
    if (!Number.isInteger(msix.bar) || msix.bar < 0 || msix.bar > 5) fail(`MSI-X BAR ${msix.bar} is not 0-5`);
    const pbaBar = msix.pbaBar ?? msix.bar;
    let tableOffset: number;
    let pbaOffset: number;
    const tableSlot = slots[msix.bar];
    if (!tableSlot) {
      // A dedicated BAR: table at 0, PBA on its own 2 KiB-aligned boundary after it.
      if (pbaBar !== msix.bar) fail('MSI-X pbaBar must be declared when it differs from the (dedicated) table BAR');
      tableOffset = msix.tableOffset ?? 0;
      pbaOffset = msix.pbaOffset ?? nextPowerOfTwo(Math.max(tableOffset + tableBytes, 2048));
      const size = Math.max(PAGE_SIZE, nextPowerOfTwo(Math.max(tableOffset + tableBytes, pbaOffset + pbaBytes)));
      slots[msix.bar] = { index: msix.bar, size, type: 'mem32', prefetchable: false, options: undefined, memory: [] };
    } else {
      if (tableSlot.type === 'io') fail(`MSI-X table BAR ${msix.bar} must be a memory BAR`);
      tableOffset = msix.tableOffset ?? tableSlot.size / 2;
      if (pbaBar === msix.bar) {
        const gap = tableOffset + tableBytes;
        pbaOffset =
          msix.pbaOffset ??
          (alignUp(gap, PAGE_SIZE) + pbaBytes <= tableSlot.size ? alignUp(gap, PAGE_SIZE) : alignUp(gap, 8));
      } else {
        pbaOffset = msix.pbaOffset ?? 0;
      }
    }
    const pbaSlot = slots[pbaBar];
    if (!pbaSlot || pbaSlot.type === 'io') fail(`MSI-X PBA BAR ${pbaBar} must be a declared memory BAR`);
    const tableSize = slots[msix.bar]!.size;
    if (tableOffset % 8 !== 0 || pbaOffset % 8 !== 0) fail('MSI-X table and PBA offsets must be 8-byte aligned');
    if (tableOffset + tableBytes > tableSize)
      fail(`MSI-X table (${tableBytes} bytes at ${tableOffset}) does not fit BAR ${msix.bar}`);
    if (pbaOffset + pbaBytes > pbaSlot.size)
      fail(`MSI-X PBA (${pbaBytes} bytes at ${pbaOffset}) does not fit BAR ${pbaBar}`);
    if (pbaBar === msix.bar && pbaOffset < tableOffset + tableBytes && tableOffset < pbaOffset + pbaBytes)
      fail('MSI-X table and PBA overlap');
    // The table and PBA answer their bytes themselves: a register handler in the same BAR never
    // sees accesses there. Only an explicit placement says the author knows where they go.
    const shadows = (bar: number, explicit: boolean, what: string, offset: number, bytes: number): void => {
      const o = slots[bar]?.options;
      if (explicit || !(o?.read ?? o?.write ?? o?.read64 ?? o?.write64)) return;
      const range = `0x${offset.toString(16)}-0x${(offset + bytes - 1).toString(16)}`;
      fail(
        `the MSI-X ${what} in BAR ${bar} (bytes ${range}) would hide those bytes from BAR ${bar}'s register handlers: ` +
          `put MSI-X in a BAR of its own (msix.bar: an unused index, created for you), or place it with ` +
          `msix.${what === 'table' ? 'tableOffset' : 'pbaOffset'} where no register lives`,
      );
    };
    shadows(msix.bar, msix.tableOffset !== undefined, 'table', tableOffset, tableBytes);
    shadows(pbaBar, msix.pbaOffset !== undefined, 'PBA', pbaOffset, pbaBytes);
    msixLayout = { vectors, tableBar: msix.bar, tableOffset, pbaBar, pbaOffset };
  }

  for (const slot of slots) {
    if (!slot?.options?.memory) continue;
    slot.memory = memoryAreas(slot, msixLayout);
  }
  return { bars: slots, msix: msixLayout };
}

/** Page ranges an MSI-X structure occupies in `bar` (they must stay trapped). */
function msixPages(bar: number, msix: MsixLayout | undefined): MemoryArea[] {
  if (!msix) return [];
  const out: MemoryArea[] = [];
  const add = (offset: number, bytes: number): void => {
    const start = alignDown(offset, PAGE_SIZE);
    out.push({ offset: start, size: alignUp(offset + bytes, PAGE_SIZE) - start });
  };
  if (msix.tableBar === bar) add(msix.tableOffset, msixTableBytes(msix.vectors));
  if (msix.pbaBar === bar) add(msix.pbaOffset, msixPbaBytes(msix.vectors));
  return out;
}

const overlaps = (a: MemoryArea, b: MemoryArea): boolean =>
  a.offset < b.offset + b.size && b.offset < a.offset + a.size;

function memoryAreas(slot: BarLayout, msix: MsixLayout | undefined): MemoryArea[] {
  const memory = slot.options!.memory!;
  if (slot.size < PAGE_SIZE) fail(`memory-backed BAR ${slot.index} must be at least ${PAGE_SIZE} bytes`);
  const reserved = msixPages(slot.index, msix);
  if (memory === true) {
    // The whole BAR minus the MSI-X pages.
    const areas: MemoryArea[] = [];
    let at = 0;
    for (const r of [...reserved].sort((a, b) => a.offset - b.offset)) {
      if (r.offset > at) areas.push({ offset: at, size: r.offset - at });
      at = Math.max(at, r.offset + r.size);
    }
    if (at < slot.size) areas.push({ offset: at, size: slot.size - at });
    return areas;
  }
  if (memory === false) return [];
  const areas = [...memory].sort((a, b) => a.offset - b.offset);
  for (let i = 0; i < areas.length; i++) {
    const a = areas[i]!;
    if (a.offset % PAGE_SIZE !== 0 || a.size % PAGE_SIZE !== 0 || a.size <= 0)
      fail(`BAR ${slot.index} memory area ${a.offset}+${a.size} is not page-aligned`);
    if (a.offset + a.size > slot.size) fail(`BAR ${slot.index} memory area ${a.offset}+${a.size} is outside the BAR`);
    if (i > 0 && overlaps(areas[i - 1]!, a)) fail(`BAR ${slot.index} memory areas overlap`);
    if (reserved.some((r) => overlaps(r, a)))
      fail(`BAR ${slot.index} memory area ${a.offset}+${a.size} covers the MSI-X table or PBA`);
  }
  return areas.map((a) => ({ offset: a.offset, size: a.size }));
}
