/**
 * PCI helpers on top of REGION_READ/REGION_WRITE of the config region:
 * typed config accesses, BAR sizing and the capability list walk. They work
 * with anything that can read and write regions (the client implements it).
 */
import { native } from '../native/index.js';
import { PciRegion } from '../protocol/constants.js';

/** What the helpers need from a client. */
export interface RegionAccessor {
  regionRead(index: number, offset: bigint | number, count: number): Promise<Uint8Array>;
  regionWrite(index: number, offset: bigint | number, data: Uint8Array, opts?: { posted?: boolean }): Promise<void>;
  getRegionInfo(index: number): Promise<{ size: bigint; fd?: number }>;
}

function le(bytes: Uint8Array): number {
  let v = 0;
  for (let i = bytes.byteLength - 1; i >= 0; i--) v = v * 256 + bytes[i]!;
  return v;
}

/** Read 1, 2 or 4 bytes of config space (little-endian, unsigned). */
export async function cfgRead(dev: RegionAccessor, offset: number, size: 1 | 2 | 4): Promise<number> {
  return le(await dev.regionRead(PciRegion.CONFIG, offset, size));
}

/** Write 1, 2 or 4 bytes of config space. */
export async function cfgWrite(dev: RegionAccessor, offset: number, size: 1 | 2 | 4, value: number): Promise<void> {
  const b = new Uint8Array(size);
  let v = value >>> 0;
  for (let i = 0; i < size; i++, v = Math.floor(v / 256)) b[i] = v & 0xff;
  await dev.regionWrite(PciRegion.CONFIG, offset, b);
}

/** COMMAND register bits the helpers set (PCI 3.0 §6.2.2). */
export const PciCommandBit = { IO: 0x1, MEMORY: 0x2, BUS_MASTER: 0x4 } as const;

export interface EnableOptions {
  /** Decode memory BARs (COMMAND.MEMORY). Default true. */
  memory?: boolean;
  /** Let the device do DMA (COMMAND.MASTER): without it QEMU refuses its DMA. Default true. */
  busMaster?: boolean;
  /** Decode I/O BARs (COMMAND.IO). Default false. */
  io?: boolean;
}

/**
 * What a guest driver's pci_enable_device + pci_set_master do: set the
 * COMMAND bits (memory decoding and bus mastering by default), keeping the
 * others. Returns the new COMMAND value as read back.
 */
export async function enableDevice(dev: RegionAccessor, options: EnableOptions = {}): Promise<number> {
  let bits = 0;
  if (options.memory ?? true) bits |= PciCommandBit.MEMORY;
  if (options.busMaster ?? true) bits |= PciCommandBit.BUS_MASTER;
  if (options.io ?? false) bits |= PciCommandBit.IO;
  const command = await cfgRead(dev, 0x04, 2);
  await cfgWrite(dev, 0x04, 2, command | bits);
  return cfgRead(dev, 0x04, 2);
}

/** A 32-bit little-endian register of BAR region `bar` (0-5) at `offset`. */
export async function barRead32(dev: RegionAccessor, bar: number, offset: number): Promise<number> {
  return le(await dev.regionRead(bar, offset, 4));
}

/** Write a 32-bit little-endian register of BAR region `bar`; `posted` as regionWrite's (QEMU posts memory BAR writes). */
export async function barWrite32(
  dev: RegionAccessor,
  bar: number,
  offset: number,
  value: number,
  posted = false,
): Promise<void> {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, value >>> 0, true);
  await dev.regionWrite(bar, offset, b, { posted });
}

export interface BarProbe {
  bar: number;
  /** 'none' for an unimplemented BAR (reads back 0). */
  type: 'io' | 'mem32' | 'mem64' | 'none';
  prefetchable: boolean;
  /** Decoded size in bytes (0 when unimplemented). */
  size: bigint;
  /** The original register value(s), restored after probing. */
  original: bigint;
}

/**
 * Size BAR `bar` (0-5) as firmware does: write all-ones, read the mask back,
 * restore the original. A 64-bit BAR probes its upper half too.
 */
export async function probeBar(dev: RegionAccessor, bar: number): Promise<BarProbe> {
  if (!Number.isInteger(bar) || bar < 0 || bar > 5) throw new RangeError(`BAR index ${bar}`);
  const reg = 0x10 + bar * 4;
  const lo = await cfgRead(dev, reg, 4);
  await cfgWrite(dev, reg, 4, 0xffffffff);
  const maskLo = await cfgRead(dev, reg, 4);
  await cfgWrite(dev, reg, 4, lo);
  if (maskLo === 0) return { bar, type: 'none', prefetchable: false, size: 0n, original: BigInt(lo) };
  if (maskLo & 1) {
    const mask = BigInt(maskLo & 0xfffffffc) | 0xffff0000n;
    return { bar, type: 'io', prefetchable: false, size: (~mask & 0xffffffffn) + 1n, original: BigInt(lo) };
  }
  const prefetchable = (maskLo & 0x8) !== 0;
  if ((maskLo & 0x6) === 0x4 && bar < 5) {
    const hi = await cfgRead(dev, reg + 4, 4);
    await cfgWrite(dev, reg + 4, 4, 0xffffffff);
    const maskHi = await cfgRead(dev, reg + 4, 4);
    await cfgWrite(dev, reg + 4, 4, hi);
    const mask = (BigInt(maskHi) << 32n) | BigInt(maskLo & 0xfffffff0);
    const size = (~mask & 0xffffffffffffffffn) + 1n;
    return { bar, type: 'mem64', prefetchable, size, original: (BigInt(hi) << 32n) | BigInt(lo) };
  }
  const mask = BigInt(maskLo & 0xfffffff0);
  return { bar, type: 'mem32', prefetchable, size: (~mask & 0xffffffffn) + 1n, original: BigInt(lo) };
}

export interface PciCapability {
  /** Capability id (standard: 8 bits; extended: 16 bits). */
  id: number;
  offset: number;
  extended: boolean;
  /** Extended capabilities: the 4-bit version. */
  version?: number;
}

/**
 * Walk the standard capability list (from 0x34, when STATUS has CAP_LIST) and,
 * for a 4 KiB config space, the extended list from 0x100. Loops and pointers
 * outside config space end the walk with an Error.
 */
export async function walkCapabilities(dev: RegionAccessor): Promise<PciCapability[]> {
  const caps: PciCapability[] = [];
  const info = await dev.getRegionInfo(PciRegion.CONFIG);
  if (info.fd !== undefined) {
    // config space is never mmapped; do not leak what a server sent anyway
    native.closeFd(info.fd);
  }
  const configSize = Number(info.size);
  const status = await cfgRead(dev, 0x06, 2);
  if (status & 0x10) {
    const seen = new Set<number>();
    let at = (await cfgRead(dev, 0x34, 1)) & 0xfc;
    while (at !== 0) {
      if (at < 0x40 || at > 0xfc || seen.has(at)) throw new Error(`capability list: bad pointer 0x${at.toString(16)}`);
      seen.add(at);
      const word = await cfgRead(dev, at, 2);
      caps.push({ id: word & 0xff, offset: at, extended: false });
      at = (word >> 8) & 0xfc;
    }
  }
  if (configSize > 0x100) {
    const seen = new Set<number>();
    let at = 0x100;
    for (;;) {
      if (at < 0x100 || at + 4 > configSize || seen.has(at))
        throw new Error(`extended capability list: bad pointer 0x${at.toString(16)}`);
      seen.add(at);
      const header = await cfgRead(dev, at, 4);
      if (header === 0 || header === 0xffffffff) break;
      caps.push({ id: header & 0xffff, offset: at, extended: true, version: (header >>> 16) & 0xf });
      at = (header >>> 20) & 0xffc;
      if (at === 0) break;
    }
  }
  return caps;
}
