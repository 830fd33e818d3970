/**
 * Lays capabilities out in config space and links them: standard ones from
 * 0x40 (dword-aligned, pointer at 0x34, PciStatus.CAP_LIST set), extended ones
 * from 0x100 (header: id | version << 16 | next << 20). Read-only, like the
 * whole chain on hardware; QEMU emulates the next pointers anyway.
 */
import type { ConfigSpace } from '../config-space.js';
import { Cfg, PciStatus } from '../header.js';
import type { Capability, ExtendedCapability } from './capability.js';

const STD_START = 0x40;
const STD_END = 0x100;
const EXT_START = 0x100;
const align4 = (n: number): number => (n + 3) & ~3;

/** Place the standard capabilities; returns each one's offset (same order). Throws if they do not fit. */
export function placeCapabilities(cs: ConfigSpace, caps: readonly Capability[]): number[] {
  const offsets: number[] = [];
  let at = STD_START;
  for (const cap of caps) {
    if (at + cap.length > STD_END) throw new Error(`PciDevice: capabilities do not fit in 256 bytes of config space`);
    offsets.push(at);
    at = align4(at + cap.length);
  }
  caps.forEach((cap, i) => {
    const off = offsets[i]!;
    cs.setU8(off, cap.id);
    cs.setU8(off + 1, offsets[i + 1] ?? 0);
    cap.install(cs, off);
  });
  if (caps.length > 0) {
    cs.setU8(Cfg.CAP_PTR, offsets[0]!);
    cs.setU16(Cfg.STATUS, cs.u16(Cfg.STATUS) | PciStatus.CAP_LIST);
  }
  return offsets;
}

/** Place the extended capabilities (needs 4 KiB config space); returns their offsets. */
export function placeExtendedCapabilities(cs: ConfigSpace, caps: readonly ExtendedCapability[]): number[] {
  if (caps.length > 0 && cs.size < 4096) throw new Error('PciDevice: extended capabilities need `express`');
  const offsets: number[] = [];
  let at = EXT_START;
  for (const cap of caps) {
    if (at + cap.length > cs.size) throw new Error('PciDevice: extended capabilities do not fit in 4 KiB');
    offsets.push(at);
    at = align4(at + cap.length);
  }
  caps.forEach((cap, i) => {
    const off = offsets[i]!;
    const next = offsets[i + 1] ?? 0;
    cs.setU32(off, (cap.id & 0xffff) | ((cap.version & 0xf) << 16) | (next << 20));
    cap.install(cs, off);
  });
  return offsets;
}

/** Walk the standard chain from 0x34: [id, offset] pairs (stops on loops or bad pointers). */
export function walkCapabilities(read8: (offset: number) => number): { id: number; offset: number }[] {
  const out: { id: number; offset: number }[] = [];
  const seen = new Set<number>();
  let at = read8(Cfg.CAP_PTR) & 0xfc;
  while (at >= STD_START && at < STD_END && !seen.has(at)) {
    seen.add(at);
    out.push({ id: read8(at), offset: at });
    at = read8(at + 1) & 0xfc;
  }
  return out;
}

/** Walk the extended chain from 0x100 with a 32-bit reader. */
export function walkExtendedCapabilities(
  read32: (offset: number) => number,
): { id: number; version: number; offset: number }[] {
  const out: { id: number; version: number; offset: number }[] = [];
  const seen = new Set<number>();
  let at = EXT_START;
  while (at >= EXT_START && at < 4096 && !seen.has(at)) {
    seen.add(at);
    const h = read32(at);
    if (h === 0 || h === 0xffffffff) break;
    out.push({ id: h & 0xffff, version: (h >>> 16) & 0xf, offset: at });
    at = (h >>> 20) & 0xffc;
  }
  return out;
}
