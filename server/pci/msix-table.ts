/**
 * The MSI-X table and PBA as they appear in their BAR(s).
 *
 * QEMU's vfio-user-pci emulates the table itself (guest table accesses never
 * reach us) and forwards PBA reads, which we answer from the pending bits of
 * `dev.irq` (see server/irq/interrupts.ts for when a vector pends). Other
 * clients (our TypeScript client, tests) may access the table: we keep its
 * bytes (address, data, vector control with only the mask bit writable,
 * masked at reset) but do not deliver through them: delivery is by eventfd.
 * PBA writes are ignored, as the spec requires.
 */
import type { Interrupts } from '../irq/interrupts.js';
import { PciIrq } from '../../protocol/constants.js';
import { msixPbaBytes, msixTableBytes, type MsixLayout } from './bar-layout.js';

export class MsixTable {
  private readonly table: Uint8Array;

  constructor(
    readonly layout: MsixLayout,
    private readonly irq: Interrupts,
  ) {
    this.table = new Uint8Array(msixTableBytes(layout.vectors));
    this.reset();
  }

  /** All vectors masked, addresses and data zero. */
  reset(): void {
    this.table.fill(0);
    for (let v = 0; v < this.layout.vectors; v++) this.table[v * 16 + 12] = 1;
  }

  /** Whether BAR `bar` byte `offset` is in the table or the PBA; returns the end of that structure, or undefined. */
  claim(bar: number, offset: number): number | undefined {
    const l = this.layout;
    if (bar === l.tableBar && offset >= l.tableOffset && offset < l.tableOffset + this.table.length)
      return l.tableOffset + this.table.length;
    const pbaEnd = l.pbaOffset + msixPbaBytes(l.vectors);
    if (bar === l.pbaBar && offset >= l.pbaOffset && offset < pbaEnd) return pbaEnd;
    return undefined;
  }

  /** Read bytes of a claimed range (never crossing the structure's end). */
  read(bar: number, offset: number, out: Uint8Array): void {
    const l = this.layout;
    if (bar === l.tableBar && offset >= l.tableOffset && offset < l.tableOffset + this.table.length) {
      out.set(this.table.subarray(offset - l.tableOffset, offset - l.tableOffset + out.length));
      return;
    }
    const base = offset - l.pbaOffset;
    for (let i = 0; i < out.length; i++) {
      let byte = 0;
      for (let bit = 0; bit < 8; bit++) {
        const v = (base + i) * 8 + bit;
        if (v < l.vectors && this.irq.isPending(PciIrq.MSIX, v)) byte |= 1 << bit;
      }
      out[i] = byte;
    }
  }

  /** Write bytes of a claimed range: table entries take them (vector control: mask bit only), the PBA ignores them. */
  write(bar: number, offset: number, data: Uint8Array): void {
    const l = this.layout;
    if (!(bar === l.tableBar && offset >= l.tableOffset && offset < l.tableOffset + this.table.length)) return;
    for (let i = 0; i < data.length; i++) {
      const at = offset - l.tableOffset + i;
      const field = at % 16;
      if (field === 12) this.table[at] = data[i]! & 1;
      else if (field < 12) this.table[at] = data[i]!;
      // bytes 13-15 of vector control are reserved: read-only zero
    }
  }

  /** The table's bytes (a copy), for a saved state. */
  saveTable(): Uint8Array {
    return this.table.slice();
  }

  /**
   * Load saved table bytes, as the table would hold them after guest writes:
   * vector control keeps only its mask bit, the reserved bytes stay zero.
   * The caller checked the length.
   */
  restoreTable(saved: Uint8Array): void {
    for (let i = 0; i < this.table.length; i++) {
      const field = i % 16;
      this.table[i] = field < 12 ? saved[i]! : field === 12 ? saved[i]! & 1 : 0;
    }
  }

  /** The guest's mask bit for a vector (table emulation only; QEMU keeps its own). */
  isMasked(vector: number): boolean {
    return (this.table[vector * 16 + 12]! & 1) === 1;
  }
}
