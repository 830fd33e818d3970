/**
 * PCI capabilities decoded from a copy of config space, as `lspci -vvv`
 * shows them: Power Management, MSI, MSI-X, PCI Express, vendor-specific,
 * Device Serial Number, and the names of the others. The walk is lenient:
 * a bad pointer or a loop ends it with a note (the server may be anyone's).
 */
import { CAP_NAMES, EXT_CAP_NAMES } from './pci-names.js';

export interface DecodedCapability {
  offset: number;
  id: number;
  extended: boolean;
  /** Extended capabilities: the header's 4-bit version. */
  version?: number;
  name: string;
  /** The registers that matter, decoded (JSON output). */
  fields: Record<string, string | number | boolean>;
  /** The same for a terminal: the first goes on the capability's line, the rest below it. */
  lines: string[];
}

export interface CapabilityWalk {
  capabilities: DecodedCapability[];
  /** Why a walk ended early (bad pointer, loop), if it did. */
  problems: string[];
}

const u8 = (c: Uint8Array, o: number): number => c[o] ?? 0xff;
const u16 = (c: Uint8Array, o: number): number => u8(c, o) | (u8(c, o + 1) << 8);
const u32 = (c: Uint8Array, o: number): number => (u16(c, o) | (u16(c, o + 2) << 16)) >>> 0;
const flag = (on: boolean): string => (on ? '+' : '-');
const hex = (v: number, width = 0): string => v.toString(16).padStart(width, '0');

export function walkCapabilities(config: Uint8Array): CapabilityWalk {
  const capabilities: DecodedCapability[] = [];
  const problems: string[] = [];
  const status = u16(config, 0x06);
  if (status & 0x10) {
    const seen = new Set<number>();
    let at = u8(config, 0x34) & 0xfc;
    while (at !== 0) {
      if (at < 0x40 || at > 0xfc || seen.has(at)) {
        problems.push(`capability list: bad pointer 0x${hex(at)}${seen.has(at) ? ' (loop)' : ''}`);
        break;
      }
      seen.add(at);
      capabilities.push(standard(config, at, u8(config, at)));
      at = u8(config, at + 1) & 0xfc;
    }
  }
  if (config.byteLength > 0x100) {
    const seen = new Set<number>();
    let at = 0x100;
    for (;;) {
      if (at < 0x100 || at + 4 > config.byteLength || seen.has(at)) {
        problems.push(`extended capability list: bad pointer 0x${hex(at)}`);
        break;
      }
      seen.add(at);
      const header = u32(config, at);
      if (header === 0 || header === 0xffffffff) break;
      capabilities.push(extended(config, at, header & 0xffff, (header >>> 16) & 0xf));
      at = (header >>> 20) & 0xffc;
      if (at === 0) break;
    }
  }
  return { capabilities, problems };
}

function standard(c: Uint8Array, at: number, id: number): DecodedCapability {
  const base = { offset: at, id, extended: false, name: CAP_NAMES[id] ?? `Capability 0x${hex(id, 2)}` };
  switch (id) {
    case 0x01:
      return { ...base, ...powerManagement(c, at) };
    case 0x05:
      return { ...base, ...msi(c, at) };
    case 0x11:
      return { ...base, ...msix(c, at) };
    case 0x10:
      return { ...base, ...express(c, at) };
    case 0x09: {
      const length = u8(c, at + 2);
      const data = Array.from(c.subarray(at + 3, at + Math.max(3, length)), (b) => hex(b, 2)).join(' ');
      return {
        ...base,
        fields: { length, data },
        lines: [`Len=${hex(length, 2)} <?>`, ...(data ? [`Data: ${data}`] : [])],
      };
    }
    default:
      return { ...base, fields: {}, lines: [] };
  }
}

function powerManagement(c: Uint8Array, at: number): Pick<DecodedCapability, 'fields' | 'lines'> {
  const pmc = u16(c, at + 2);
  const pmcsr = u16(c, at + 4);
  const version = pmc & 0x7;
  const pme = ['D0', 'D1', 'D2', 'D3hot', 'D3cold'].map((d, i) => `${d}${flag((pmc & (1 << (11 + i))) !== 0)}`);
  const state = `D${pmcsr & 0x3}`.replace('D3', 'D3hot');
  return {
    fields: {
      version,
      d1: (pmc & 0x200) !== 0,
      d2: (pmc & 0x400) !== 0,
      pmeSupport: (pmc >>> 11) & 0x1f,
      powerState: state,
      noSoftReset: (pmcsr & 0x8) !== 0,
      pmeEnable: (pmcsr & 0x100) !== 0,
    },
    lines: [
      `version ${version}`,
      `Flags: PMEClk${flag((pmc & 0x8) !== 0)} DSI${flag((pmc & 0x20) !== 0)} D1${flag((pmc & 0x200) !== 0)} D2${flag((pmc & 0x400) !== 0)} PME(${pme.join(',')})`,
      `Status: ${state} NoSoftRst${flag((pmcsr & 0x8) !== 0)} PME-Enable${flag((pmcsr & 0x100) !== 0)} PME${flag((pmcsr & 0x8000) !== 0)}`,
    ],
  };
}

function msi(c: Uint8Array, at: number): Pick<DecodedCapability, 'fields' | 'lines'> {
  const ctl = u16(c, at + 2);
  const is64 = (ctl & 0x80) !== 0;
  const masking = (ctl & 0x100) !== 0;
  const capable = 1 << ((ctl >>> 1) & 0x7);
  const enabled = 1 << ((ctl >>> 4) & 0x7);
  const address = is64 ? `${hex(u32(c, at + 8), 8)}${hex(u32(c, at + 4), 8)}` : hex(u32(c, at + 4), 8);
  const data = u16(c, at + (is64 ? 12 : 8));
  const lines = [
    `Enable${flag((ctl & 1) !== 0)} Count=${enabled}/${capable} Maskable${flag(masking)} 64bit${flag(is64)}`,
    `Address: ${address}  Data: ${hex(data, 4)}`,
  ];
  const fields: Record<string, string | number | boolean> = {
    enable: (ctl & 1) !== 0,
    vectors: capable,
    enabledVectors: enabled,
    perVectorMasking: masking,
    is64bit: is64,
    address: `0x${address}`,
    data,
  };
  if (masking) {
    const mask = u32(c, at + (is64 ? 16 : 12));
    const pending = u32(c, at + (is64 ? 20 : 16));
    lines.push(`Masking: ${hex(mask, 8)}  Pending: ${hex(pending, 8)}`);
    fields.mask = mask;
    fields.pending = pending;
  }
  return { fields, lines };
}

function msix(c: Uint8Array, at: number): Pick<DecodedCapability, 'fields' | 'lines'> {
  const ctl = u16(c, at + 2);
  const table = u32(c, at + 4);
  const pba = u32(c, at + 8);
  const count = (ctl & 0x7ff) + 1;
  return {
    fields: {
      enable: (ctl & 0x8000) !== 0,
      functionMask: (ctl & 0x4000) !== 0,
      vectors: count,
      tableBar: table & 0x7,
      tableOffset: table & ~0x7,
      pbaBar: pba & 0x7,
      pbaOffset: pba & ~0x7,
    },
    lines: [
      `Enable${flag((ctl & 0x8000) !== 0)} Count=${count} Masked${flag((ctl & 0x4000) !== 0)}`,
      `Vector table: BAR=${table & 0x7} offset=${hex((table & ~0x7) >>> 0, 8)}`,
      `PBA: BAR=${pba & 0x7} offset=${hex((pba & ~0x7) >>> 0, 8)}`,
    ],
  };
}

const PORT_TYPES: Record<number, string> = {
  0x0: 'Endpoint',
  0x1: 'Legacy Endpoint',
  0x4: 'Root Port',
  0x5: 'Upstream Port',
  0x6: 'Downstream Port',
  0x7: 'PCI-Express to PCI/PCI-X Bridge',
  0x8: 'PCI/PCI-X to PCI-Express Bridge',
  0x9: 'Root Complex Integrated Endpoint',
  0xa: 'Root Complex Event Collector',
};
const SPEEDS: Record<number, string> = { 1: '2.5GT/s', 2: '5GT/s', 3: '8GT/s', 4: '16GT/s', 5: '32GT/s', 6: '64GT/s' };

function express(c: Uint8Array, at: number): Pick<DecodedCapability, 'fields' | 'lines'> {
  const caps = u16(c, at + 2);
  const version = caps & 0xf;
  const type = (caps >>> 4) & 0xf;
  const devcap = u32(c, at + 4);
  const devctl = u16(c, at + 8);
  const devsta = u16(c, at + 10);
  const maxPayload = 128 << (devcap & 0x7);
  const payload = 128 << ((devctl >>> 5) & 0x7);
  const readRequest = 128 << ((devctl >>> 12) & 0x7);
  const flr = (devcap & (1 << 28)) !== 0;
  const typeName = PORT_TYPES[type] ?? `type ${type}`;
  const fields: Record<string, string | number | boolean> = {
    version,
    type: typeName,
    maxPayloadSupported: maxPayload,
    flr,
    maxPayload: payload,
    maxReadRequest: readRequest,
  };
  const lines = [
    `(v${version}) ${typeName}, MSI ${hex((caps >>> 9) & 0x1f, 2)}`,
    `DevCap: MaxPayload ${maxPayload} bytes, RBE${flag((devcap & (1 << 15)) !== 0)} FLReset${flag(flr)}`,
    `DevCtl: CorrErr${flag((devctl & 1) !== 0)} NonFatalErr${flag((devctl & 2) !== 0)} FatalErr${flag((devctl & 4) !== 0)} UnsupReq${flag((devctl & 8) !== 0)} RlxdOrd${flag((devctl & 0x10) !== 0)} NoSnoop${flag((devctl & 0x800) !== 0)}`,
    `        MaxPayload ${payload} bytes, MaxReadReq ${readRequest} bytes`,
    `DevSta: CorrErr${flag((devsta & 1) !== 0)} NonFatalErr${flag((devsta & 2) !== 0)} FatalErr${flag((devsta & 4) !== 0)} UnsupReq${flag((devsta & 8) !== 0)} TransPend${flag((devsta & 0x20) !== 0)}`,
  ];
  if (type !== 0x9) {
    const lnkcap = u32(c, at + 0x0c);
    const lnksta = u16(c, at + 0x12);
    const speed = SPEEDS[lnkcap & 0xf] ?? 'unknown';
    const width = (lnkcap >>> 4) & 0x3f;
    const nowSpeed = SPEEDS[lnksta & 0xf] ?? 'unknown';
    const nowWidth = (lnksta >>> 4) & 0x3f;
    fields.linkSpeed = speed;
    fields.linkWidth = width;
    fields.linkStatus = `${nowSpeed} x${nowWidth}`;
    lines.push(`LnkCap: Port #${lnkcap >>> 24}, Speed ${speed}, Width x${width}`);
    lines.push(`LnkSta: Speed ${nowSpeed}, Width x${nowWidth}`);
  }
  return { fields, lines };
}

function extended(c: Uint8Array, at: number, id: number, version: number): DecodedCapability {
  const base = {
    offset: at,
    id,
    extended: true,
    version,
    name: EXT_CAP_NAMES[id] ?? `Extended Capability 0x${hex(id, 4)}`,
  };
  if (id === 0x0003) {
    const serial = Array.from(c.subarray(at + 4, at + 12))
      .reverse()
      .map((b) => hex(b, 2))
      .join('-');
    return { ...base, fields: { serial }, lines: [serial] };
  }
  if (id === 0x000b) {
    const vsec = u32(c, at + 4);
    const length = vsec >>> 20;
    const data = Array.from(c.subarray(at + 8, at + Math.min(Math.max(8, length), 8 + 64)), (b) => hex(b, 2)).join(' ');
    return {
      ...base,
      fields: { vsecId: vsec & 0xffff, vsecRevision: (vsec >>> 16) & 0xf, length, data },
      lines: [
        `ID=${hex(vsec & 0xffff, 4)} Rev=${(vsec >>> 16) & 0xf} Len=${hex(length, 3)} <?>`,
        ...(data ? [`Data: ${data}`] : []),
      ],
    };
  }
  return { ...base, fields: {}, lines: [] };
}
