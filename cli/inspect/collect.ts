/**
 * What `vfio-user-ts inspect` learns from a server, as a client: VERSION's
 * capabilities, DEVICE_GET_INFO, every region's info (sparse mmap areas,
 * type), every IRQ index, config space (read only), the PCI capabilities in
 * it, migration support, and (with probeBars) each BAR's size as firmware
 * sizes it. Everything is plain JSON; a request that fails is noted in the
 * report, not thrown, so a partial server still gets described.
 */
import { native } from '../../native/index.js';
import { DeviceFlag, IrqInfoFlag, PciRegion, RegionCap, RegionFlag } from '../../protocol/constants.js';
import { MigrationFlag } from '../../protocol/features.js';
import type { VfioUserClient } from '../../client/index.js';
import { errnoName, irqName, regionName } from '../../trace/index.js';
import { walkCapabilities, type DecodedCapability } from './pci-capabilities.js';

export interface RegionReport {
  index: number;
  name: string;
  size: string;
  /** Bytes, for a reader (size above is the exact hex). */
  bytes: number;
  offset: string;
  flags: string[];
  /** The server sent an fd with the info (the region can be mmapped). */
  fd: boolean;
  sparseMmap?: { offset: string; size: string }[];
  type?: { type: number; subtype: number };
  msixMappable?: boolean;
  error?: string;
}

export interface IrqReport {
  index: number;
  name: string;
  count: number;
  flags: string[];
  error?: string;
}

export interface BarReport {
  bar: number;
  /** From the BAR register: io, mem32, mem64 (the upper half of a 64-bit one is not listed), or none. */
  kind: 'io' | 'mem32' | 'mem64' | 'none';
  prefetchable: boolean;
  /** The BAR register's value (hex). */
  register: string;
  /** Size of its region (GET_REGION_INFO). */
  regionSize: string;
  /** With --probe-bars: the size the register decodes (all-ones written, read back, restored). */
  probedSize?: string;
}

export interface DeviceReport {
  socket: string;
  server: { major: number; minor: number; json: string; capabilities: unknown };
  device: { flags: string[]; regions: number; irqs: number };
  pci?: {
    vendor: number;
    device: number;
    subsystemVendor: number;
    subsystem: number;
    revision: number;
    classCode: number;
    headerType: number;
    command: number;
    status: number;
    interruptPin: number;
    interruptLine: number;
    configSize: number;
  };
  bars: BarReport[];
  capabilities: DecodedCapability[];
  regions: RegionReport[];
  irqs: IrqReport[];
  migration?: { flags: string[] } | { error: string };
  problems: string[];
}

const names = (bits: number, table: Record<string, number>): string[] =>
  Object.entries(table)
    .filter(([, b]) => (bits & b) !== 0)
    .map(([n]) => n);

function why(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  if (err && typeof err === 'object' && 'errno' in err && typeof err.errno === 'number')
    return message.includes(errnoName(err.errno)) ? message : `${errnoName(err.errno)}: ${message}`;
  return message;
}

/** Most config space read (PCI Express: 4 KiB). */
const MAX_CONFIG = 4096;

export async function inspectDevice(
  client: VfioUserClient,
  socket: string,
  options: { probeBars?: boolean } = {},
): Promise<DeviceReport> {
  const problems: string[] = [];
  const server = client.server;
  const info = await client.getDeviceInfo();
  const report: DeviceReport = {
    socket,
    server: {
      major: server?.major ?? 0,
      minor: server?.minor ?? 0,
      json: server?.json ?? '',
      capabilities: safeJson(server?.json),
    },
    device: { flags: names(info.flags, DeviceFlag), regions: info.numRegions, irqs: info.numIrqs },
    bars: [],
    capabilities: [],
    regions: [],
    irqs: [],
    problems,
  };
  // A hostile server can claim 2^32 regions: ask for a sane number.
  for (let i = 0; i < Math.min(info.numRegions, 64); i++) report.regions.push(await region(client, i));
  for (let i = 0; i < Math.min(info.numIrqs, 64); i++) report.irqs.push(await irq(client, i));
  if (info.numRegions > 64 || info.numIrqs > 64)
    problems.push('more than 64 regions or IRQ indexes: the rest not asked');

  const config = report.regions.find((r) => r.index === PciRegion.CONFIG);
  if (info.flags & DeviceFlag.PCI && config && !config.error && config.bytes > 0) {
    const bytes = await readConfig(client, Math.min(config.bytes, MAX_CONFIG), problems);
    const walk = walkCapabilities(bytes);
    report.capabilities = walk.capabilities;
    problems.push(...walk.problems);
    report.pci = {
      vendor: u16(bytes, 0),
      device: u16(bytes, 2),
      command: u16(bytes, 4),
      status: u16(bytes, 6),
      revision: bytes[8]!,
      classCode: (bytes[9]! | (bytes[10]! << 8) | (bytes[11]! << 16)) >>> 0,
      headerType: bytes[0x0e]!,
      subsystemVendor: u16(bytes, 0x2c),
      subsystem: u16(bytes, 0x2e),
      interruptLine: bytes[0x3c]!,
      interruptPin: bytes[0x3d]!,
      configSize: bytes.byteLength,
    };
    report.bars = await bars(client, bytes, report.regions, options.probeBars ?? false, problems);
  }
  try {
    report.migration = { flags: names(await client.migrationFlags(), MigrationFlag) };
  } catch (err) {
    // Not migratable: the errno says enough (EINVAL from us, ENOTSUP or ENOSYS from others).
    const errno = err && typeof err === 'object' && 'errno' in err ? err.errno : undefined;
    report.migration = { error: typeof errno === 'number' ? errnoName(errno) : why(err) };
  }
  return report;
}

function safeJson(text: string | undefined): unknown {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

async function region(client: VfioUserClient, index: number): Promise<RegionReport> {
  const base = { index, name: regionName(index) };
  try {
    const r = await client.getRegionInfo(index);
    if (r.fd !== undefined) native.closeFd(r.fd);
    const out: RegionReport = {
      ...base,
      size: `0x${r.size.toString(16)}`,
      bytes: Number(r.size),
      offset: `0x${r.offset.toString(16)}`,
      flags: names(r.flags, RegionFlag),
      fd: r.fd !== undefined,
    };
    for (const cap of r.caps) {
      if (cap.id === RegionCap.SPARSE_MMAP)
        out.sparseMmap = cap.areas.map((a) => ({
          offset: `0x${a.offset.toString(16)}`,
          size: `0x${a.size.toString(16)}`,
        }));
      else if (cap.id === RegionCap.TYPE) out.type = { type: cap.type, subtype: cap.subtype };
      else out.msixMappable = true;
    }
    return out;
  } catch (err) {
    return { ...base, size: '0x0', bytes: 0, offset: '0x0', flags: [], fd: false, error: why(err) };
  }
}

async function irq(client: VfioUserClient, index: number): Promise<IrqReport> {
  try {
    const r = await client.getIrqInfo(index);
    return { index, name: irqName(index), count: r.count, flags: names(r.flags, IrqInfoFlag) };
  } catch (err) {
    return { index, name: irqName(index), count: 0, flags: [], error: why(err) };
  }
}

/** Config space in one read, or dword by dword if the server refuses that (unreadable dwords read as ff). */
async function readConfig(client: VfioUserClient, size: number, problems: string[]): Promise<Uint8Array> {
  try {
    return Uint8Array.from(await client.regionRead(PciRegion.CONFIG, 0, size));
  } catch {
    const bytes = new Uint8Array(size).fill(0xff);
    let failed = 0;
    for (let at = 0; at + 4 <= size; at += 4) {
      try {
        bytes.set(await client.regionRead(PciRegion.CONFIG, at, 4), at);
      } catch {
        failed++;
      }
    }
    if (failed > 0) problems.push(`config space: ${failed} dwords could not be read`);
    return bytes;
  }
}

async function bars(
  client: VfioUserClient,
  config: Uint8Array,
  regions: RegionReport[],
  probe: boolean,
  problems: string[],
): Promise<BarReport[]> {
  const out: BarReport[] = [];
  for (let bar = 0; bar < 6; bar++) {
    const reg = (u16(config, 0x10 + bar * 4) | (u16(config, 0x12 + bar * 4) << 16)) >>> 0;
    const io = (reg & 1) !== 0;
    const mem64 = !io && (reg & 0x6) === 0x4;
    const size = regions.find((r) => r.index === bar)?.size ?? '0x0';
    // No region and no address: an unimplemented BAR (libvfio-user leaves the I/O bit set in those).
    if (size === '0x0' && (reg & ~0xf) === 0) continue;
    const kind = io ? 'io' : mem64 ? 'mem64' : size === '0x0' ? 'none' : 'mem32';
    const hi = mem64 && bar < 5 ? (u16(config, 0x14 + bar * 4) | (u16(config, 0x16 + bar * 4) << 16)) >>> 0 : 0;
    const entry: BarReport = {
      bar,
      kind,
      prefetchable: !io && (reg & 0x8) !== 0,
      register: `0x${(mem64 ? (BigInt(hi) << 32n) | BigInt(reg) : BigInt(reg)).toString(16)}`,
      regionSize: size,
    };
    if (probe) {
      try {
        entry.probedSize = `0x${(await client.probeBar(bar)).size.toString(16)}`;
      } catch (err) {
        problems.push(`BAR${bar}: probing failed: ${why(err)}`);
      }
    }
    out.push(entry);
    if (mem64) bar++; // the upper half
  }
  return out;
}
