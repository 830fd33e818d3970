/**
 * The part of a device's state the library owns, as saved-state sections
 * (server/state/envelope.ts): config space (BAR programming, COMMAND,
 * capability registers), the MSI-X table, the interrupt state (per index:
 * enabled, masked and pending vectors; INTx asserted; the PBA and MSI pending
 * bits follow from it), and the contents of memory-backed BARs. DMA mappings
 * and eventfds are the client's and are not saved: the client sets them up
 * again (on a migration destination, before or after the load).
 *
 * Section `PCI ` (fields.ts encoding):
 *   { layout: u32, config: bytes, msixTable: bytes,
 *     irqs: {enabled: bool, masked: bytes, pending: bytes}[], intxAsserted: bool }
 * `layout` is a CRC-32C of everything that must match for the state to make
 * sense here: config space's fixed bits and masks (ids, class, BAR sizes and
 * types, the capability chain), the vectors per IRQ index, the MSI-X table
 * size, the memory BARs. masked/pending are bit arrays, vector v at bit v%8 of byte v/8.
 *
 * Section `BARM` (present when the device has memory BARs and saves them):
 *   { index: u8, bytes: bytes }[] in BAR order, each BAR's whole memory.
 *
 * Loading is prepare-then-apply: every check runs before anything changes,
 * and applying cannot fail.
 */
import { crc32c } from '../state/crc32c.js';
import { decodeField, encodeField, Field, StateError } from '../state/fields.js';
import type { Interrupts, IrqState } from '../irq/interrupts.js';
import type { ConfigSpace } from './config-space.js';
import type { MsixTable } from './msix-table.js';

/** What pci-state reads and writes inside a PciDevice. */
export interface PciStateParts {
  readonly config: ConfigSpace;
  readonly msix: MsixTable | undefined;
  readonly irq: Interrupts;
  /** The memory-backed BARs whose bytes are saved (empty when the device opted out). */
  readonly barMemory: readonly { index: number; bytes: Uint8Array }[];
  /** Re-derive what config-space write hooks would have done for the restored bytes (INTx disable, MSI enable). */
  afterConfigRestore(): void;
}

const MAX_VECTORS = 2048;
const pciSection = Field.struct({
  layout: Field.u32(),
  config: Field.bytes(4096),
  msixTable: Field.bytes(MAX_VECTORS * 16),
  irqs: Field.array(
    Field.struct({
      enabled: Field.bool(),
      masked: Field.bytes(MAX_VECTORS / 8),
      pending: Field.bytes(MAX_VECTORS / 8),
    }),
    5,
  ),
  intxAsserted: Field.bool(),
});

function barMemorySection(maxBar: number): ReturnType<typeof barField> {
  return barField(maxBar);
}
function barField(maxBar: number) {
  return Field.array(Field.struct({ index: Field.u8(), bytes: Field.bytes(maxBar) }), 6);
}

/** Largest `PCI ` section. */
export const PCI_SECTION_MAX_BYTES = pciSection.maxBytes;

/** Largest `BARM` section for these BARs (0 when none). */
export function barMemorySectionMaxBytes(parts: PciStateParts): number {
  if (parts.barMemory.length === 0) return 0;
  return 4 + parts.barMemory.reduce((n, b) => n + 1 + 4 + b.bytes.byteLength, 0);
}

function packBits(bits: readonly boolean[]): Uint8Array {
  const out = new Uint8Array(Math.ceil(bits.length / 8));
  bits.forEach((b, i) => {
    if (b) out[i >>> 3]! |= 1 << (i & 7);
  });
  return out;
}

function unpackBits(bytes: Uint8Array, count: number, what: string): boolean[] {
  if (bytes.byteLength !== Math.ceil(count / 8))
    throw new StateError(`state: ${what}: ${bytes.byteLength} bytes for ${count} vectors`);
  const out: boolean[] = [];
  for (let i = 0; i < count; i++) out.push((bytes[i >>> 3]! & (1 << (i & 7))) !== 0);
  for (let i = count; i < bytes.byteLength * 8; i++) {
    if (bytes[i >>> 3]! & (1 << (i & 7))) throw new StateError(`state: ${what}: bit ${i} beyond ${count} vectors`);
  }
  return out;
}

const IRQ_NAMES = ['INTx', 'MSI', 'MSI-X', 'ERR', 'REQ'];

function irqCounts(irq: Interrupts): number[] {
  const c = irq.counts;
  return [c.intx, c.msi, c.msix, c.err, c.req];
}

/** The layout checksum (see the file comment). */
function pciLayoutChecksum(parts: PciStateParts): number {
  const layout = parts.config.layout();
  const extra = [
    ...irqCounts(parts.irq),
    parts.msix?.layout.vectors ?? 0,
    ...parts.barMemory.flatMap((b) => [b.index, b.bytes.byteLength]),
  ];
  const all = new Uint8Array(layout.byteLength + extra.length * 4);
  all.set(layout);
  const dv = new DataView(all.buffer);
  extra.forEach((v, i) => dv.setUint32(layout.byteLength + i * 4, v >>> 0, true));
  return crc32c(all);
}

/** The `PCI ` section of the current state. */
export function savePciSection(parts: PciStateParts): Uint8Array {
  const irq = parts.irq.saveState();
  return encodeField(pciSection, {
    layout: pciLayoutChecksum(parts),
    config: parts.config.bytes.slice(),
    msixTable: parts.msix?.saveTable() ?? new Uint8Array(0),
    irqs: irq.indexes.map((s) => ({ enabled: s.enabled, masked: packBits(s.masked), pending: packBits(s.pending) })),
    intxAsserted: irq.intxAsserted,
  });
}

/** The `BARM` section, or undefined when no BAR memory is saved. */
export function saveBarMemorySection(parts: PciStateParts): Uint8Array | undefined {
  if (parts.barMemory.length === 0) return undefined;
  const max = Math.max(...parts.barMemory.map((b) => b.bytes.byteLength));
  return encodeField(
    barMemorySection(max),
    parts.barMemory.map((b) => ({ index: b.index, bytes: b.bytes.slice() })),
  );
}

/**
 * Check a `PCI ` section against this device and return what applies it
 * (which cannot fail). StateError when it was saved for another layout or
 * is malformed.
 */
export function preparePciSection(parts: PciStateParts, bytes: Uint8Array): () => void {
  const s = decodeField(pciSection, bytes);
  if (s.layout !== pciLayoutChecksum(parts)) {
    throw new StateError(
      'state: saved for another PCI layout (config space, BARs, capabilities or interrupt vectors differ from this device)',
    );
  }
  if (s.config.byteLength !== parts.config.size)
    throw new StateError(`state: config space of ${s.config.byteLength} bytes, this device has ${parts.config.size}`);
  const tableBytes = (parts.msix?.layout.vectors ?? 0) * 16;
  if (s.msixTable.byteLength !== tableBytes)
    throw new StateError(`state: MSI-X table of ${s.msixTable.byteLength} bytes, this device has ${tableBytes}`);
  const counts = irqCounts(parts.irq);
  if (s.irqs.length !== counts.length) throw new StateError(`state: ${s.irqs.length} IRQ indexes, expected 5`);
  const irq: IrqState = {
    indexes: s.irqs.map((x, i) => ({
      enabled: x.enabled,
      masked: unpackBits(x.masked, counts[i]!, `${IRQ_NAMES[i]} masked`),
      pending: unpackBits(x.pending, counts[i]!, `${IRQ_NAMES[i]} pending`),
    })),
    intxAsserted: s.intxAsserted,
  };
  return () => {
    parts.config.restore(s.config);
    parts.afterConfigRestore();
    if (parts.msix) parts.msix.restoreTable(s.msixTable);
    parts.irq.restoreState(irq);
  };
}

/** Check a `BARM` section (required exactly when this device saves BAR memory) and return what applies it. */
export function prepareBarMemorySection(parts: PciStateParts, bytes: Uint8Array | undefined): () => void {
  if (parts.barMemory.length === 0) {
    if (bytes !== undefined) throw new StateError('state: has BAR memory, this device saves none');
    return () => undefined;
  }
  if (bytes === undefined) throw new StateError('state: has no BAR memory, this device saves it');
  const max = Math.max(...parts.barMemory.map((b) => b.bytes.byteLength));
  const saved = decodeField(barMemorySection(max), bytes);
  if (
    saved.length !== parts.barMemory.length ||
    saved.some(
      (b, i) => b.index !== parts.barMemory[i]!.index || b.bytes.byteLength !== parts.barMemory[i]!.bytes.byteLength,
    )
  ) {
    throw new StateError('state: its memory BARs differ from this device');
  }
  return () => saved.forEach((b, i) => parts.barMemory[i]!.bytes.set(b.bytes));
}
