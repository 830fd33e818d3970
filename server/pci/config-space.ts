/**
 * Emulated configuration space: bytes plus, per bit, whether a write may set it
 * (writable mask) or clears it when written as 1 (RW1C mask). Everything else is
 * read-only and writes to it are ignored, as on hardware. Capabilities and the
 * header register hooks to react to writes (BAR sizing needs none: the masks do it).
 */

/** A write that touched a hooked range: where, what was written, and the hooked bytes before the write. */
export interface ConfigWrite {
  offset: number;
  data: Uint8Array;
  /** Copy of the hooked range [start, start + length) before the write. */
  before: Uint8Array;
}

export type ConfigWriteHook = (write: ConfigWrite) => void | Promise<void>;

interface Hook {
  start: number;
  length: number;
  fn: ConfigWriteHook;
}

export class ConfigSpace {
  readonly bytes: Uint8Array;
  private readonly view: DataView;
  private readonly writable: Uint8Array;
  private readonly rw1c: Uint8Array;
  private readonly hooks: Hook[] = [];
  private powerOn: Uint8Array | undefined;

  /** `size`: 256 (conventional) or 4096 (PCI Express). */
  constructor(readonly size: number) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
    this.writable = new Uint8Array(size);
    this.rw1c = new Uint8Array(size);
  }

  u8(offset: number): number {
    return this.bytes[offset]!;
  }
  u16(offset: number): number {
    return this.view.getUint16(offset, true);
  }
  u32(offset: number): number {
    return this.view.getUint32(offset, true);
  }
  /** Raw set (ignores masks): for the device model itself. */
  setU8(offset: number, value: number): void {
    this.bytes[offset] = value;
  }
  setU16(offset: number, value: number): void {
    this.view.setUint16(offset, value, true);
  }
  setU32(offset: number, value: number): void {
    this.view.setUint32(offset, value >>> 0, true);
  }

  /** Declare which bits of [offset, offset+size) software may write (`writable`) or clear by writing 1 (`rw1c`). */
  setMask(offset: number, size: 1 | 2 | 4, writable: number, rw1c = 0): void {
    for (let i = 0; i < size; i++) {
      this.writable[offset + i] = (writable >>> (8 * i)) & 0xff;
      this.rw1c[offset + i] = (rw1c >>> (8 * i)) & 0xff;
    }
  }

  /** Per-byte writable masks from an array (for vendor capabilities). */
  setWritableBytes(offset: number, masks: Uint8Array): void {
    this.writable.set(masks, offset);
  }

  /** Call `fn` after any write that overlaps [start, start+length). Hooks run in registration order. */
  onWrite(start: number, length: number, fn: ConfigWriteHook): void {
    this.hooks.push({ start, length, fn });
  }

  /** Remember the current bytes as the power-on state (restored by `reset()`). */
  seal(): void {
    this.powerOn = this.bytes.slice();
  }

  /** Back to the power-on state. */
  reset(): void {
    if (this.powerOn) this.bytes.set(this.powerOn);
  }

  /**
   * What identifies this config space's layout for a saved state: the
   * power-on bytes software cannot change (ids, class, capability chain, BAR
   * type bits) and the writable and RW1C masks (BAR sizes, which registers
   * exist). Two devices whose layouts differ cannot take each other's state.
   */
  layout(): Uint8Array {
    const fixed = (this.powerOn ?? this.bytes).slice();
    for (let i = 0; i < this.size; i++) fixed[i]! &= ~(this.writable[i]! | this.rw1c[i]!);
    const out = new Uint8Array(this.size * 3);
    out.set(fixed, 0);
    out.set(this.writable, this.size);
    out.set(this.rw1c, this.size * 2);
    return out;
  }

  /**
   * Load saved bytes (of the same layout): the bits software can change
   * (writable and RW1C) take the saved values, every other bit keeps ours.
   * No write hooks run: the device model re-derives what they would have set.
   */
  restore(saved: Uint8Array): void {
    for (let i = 0; i < this.size; i++) {
      const m = this.writable[i]! | this.rw1c[i]!;
      this.bytes[i] = (this.bytes[i]! & ~m) | (saved[i]! & m);
    }
  }

  /** A copy of [offset, offset+count) (the caller checked the range). */
  read(offset: number, count: number): Uint8Array {
    return this.bytes.slice(offset, offset + count);
  }

  /**
   * Apply a guest write: writable bits take the new value, RW1C bits clear
   * where a 1 is written, the rest stays. Then the hooks overlapping the
   * range run (awaited in order if any is async).
   */
  write(offset: number, data: Uint8Array): void | Promise<void> {
    const touched = this.hooks.filter((h) => offset < h.start + h.length && h.start < offset + data.length);
    const befores = touched.map((h) => this.bytes.slice(h.start, h.start + h.length));
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      const v = data[i]!;
      const w = this.writable[at]!;
      const c = this.rw1c[at]!;
      let b = (this.bytes[at]! & ~w) | (v & w);
      b &= ~(v & c);
      this.bytes[at] = b & 0xff;
    }
    let pending: Promise<void> | undefined;
    for (let i = 0; i < touched.length; i++) {
      const hook = touched[i]!;
      const write: ConfigWrite = { offset, data, before: befores[i]! };
      if (pending) {
        pending = pending.then(() => hook.fn(write));
        continue;
      }
      const r = hook.fn(write);
      if (r instanceof Promise) pending = r;
    }
    return pending;
  }
}

/** Whether the write covered byte `at` and wrote bit `bit` (0-7 within that byte) as 1. */
export function wroteBit(write: ConfigWrite, at: number, bit: number): boolean {
  if (at < write.offset || at >= write.offset + write.data.length) return false;
  return ((write.data[at - write.offset]! >> bit) & 1) === 1;
}
