/**
 * Identify data structures (4 KiB each) and log pages, built from the
 * controller's settings. Offsets are from the NVMe 1.4 base specification.
 */
import { MAX_AERS, MDTS, NVME_VERSION, PAGE_SIZE } from './constants.js';
import type { Namespace } from './namespace.js';

/** What Identify Controller reports. */
export interface ControllerIdentity {
  vendor: number;
  subsystemVendor: number;
  serial: string;
  model: string;
  firmware: string;
  namespaces: number;
  /** Controller id. */
  cntlid: number;
}

function ascii(buf: Uint8Array, offset: number, length: number, text: string): void {
  buf.fill(0x20, offset, offset + length);
  for (let i = 0; i < Math.min(length, text.length); i++) buf[offset + i] = text.charCodeAt(i) & 0x7f;
}

/** Optional NVM commands (ONCS): Compare, Dataset Management, Write Zeroes. */
const ONCS = (1 << 0) | (1 << 2) | (1 << 3);
/** Optional admin commands (OACS): Doorbell Buffer Config. */
const OACS = 1 << 8;
/** Async events we can send (OAES): Namespace Attribute Notices. */
const OAES = 1 << 8;

/** Identify Controller (CNS 01h). */
export function identifyController(id: ControllerIdentity): Uint8Array {
  const b = new Uint8Array(PAGE_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(0, id.vendor, true);
  v.setUint16(2, id.subsystemVendor, true);
  ascii(b, 4, 20, id.serial);
  ascii(b, 24, 40, id.model);
  ascii(b, 64, 8, id.firmware);
  b[72] = 6; // RAB
  b[77] = MDTS;
  v.setUint16(78, id.cntlid, true);
  v.setUint32(80, NVME_VERSION, true);
  v.setUint32(92, OAES, true);
  b[111] = 1; // CNTRLTYPE: I/O controller
  v.setUint16(256, OACS, true);
  b[258] = 3; // ACL: 4 concurrent Aborts
  b[259] = MAX_AERS - 1; // AERL
  b[260] = 0x03; // FRMW: slot 1 read-only, 1 slot
  b[261] = 0x04; // LPA: extended data (offsets) for Get Log Page
  b[262] = 63; // ELPE: 64 error log entries
  b[263] = 0; // NPSS: one power state
  v.setUint16(266, 0x157, true); // WCTEMP 343 K
  v.setUint16(268, 0x175, true); // CCTEMP 373 K
  b[512] = 0x66; // SQES
  b[513] = 0x44; // CQES
  v.setUint32(516, id.namespaces, true); // NN
  v.setUint16(520, ONCS, true);
  b[525] = 0x01; // VWC present
  b[530] = 0x01; // NVSCC
  // SUBNQN (NUL-padded).
  const nqn = `nqn.2024-01.io.github.vfio-user-ts:nvme:${id.serial.trim()}`;
  for (let i = 0; i < Math.min(255, nqn.length); i++) b[768 + i] = nqn.charCodeAt(i) & 0x7f;
  // Power state 0: 25 W max, operational.
  v.setUint16(2048, 2500, true);
  return b;
}

/** Identify Namespace (CNS 00h). */
export function identifyNamespace(ns: Namespace): Uint8Array {
  const b = new Uint8Array(PAGE_SIZE);
  const v = new DataView(b.buffer);
  const blocks = BigInt(ns.blocks);
  v.setBigUint64(0, blocks, true); // NSZE
  v.setBigUint64(8, blocks, true); // NCAP
  v.setBigUint64(16, blocks, true); // NUSE
  b[25] = 0; // NLBAF: one format
  b[26] = 0; // FLBAS: format 0
  // DLFEAT: deallocated blocks read as zeroes (001b) and Write Zeroes honours DEAC (bit 3), when true for this
  // namespace (memory; files that punch holes). NSFEAT stays 0: no thin provisioning (NUSE = NSZE) and no
  // deallocated-block errors (DAE).
  b[33] = ns.deallocateReadsZeroes ? 0x09 : 0;
  b.set(ns.nguid, 104); // NGUID
  v.setUint32(128, ns.lbaShift << 16, true); // LBAF0: no metadata, LBADS
  return b;
}

/** I/O command set independent Identify Namespace (CNS 08h). */
export function identifyNamespaceIndependent(): Uint8Array {
  const b = new Uint8Array(PAGE_SIZE);
  b[14] = 1; // NSTAT: ready
  return b;
}

/** Namespace Identification Descriptor list (CNS 03h): NGUID and CSI. */
export function namespaceDescriptors(ns: Namespace): Uint8Array {
  const b = new Uint8Array(PAGE_SIZE);
  b[0] = 2; // NIDT NGUID
  b[1] = 16;
  b.set(ns.nguid, 4);
  b[20] = 4; // NIDT CSI
  b[21] = 1;
  b[24] = 0; // NVM command set
  return b;
}

/** Active Namespace ID list (CNS 02h): ids greater than `after`, ascending. */
export function activeNamespaceList(nsids: readonly number[], after: number): Uint8Array {
  const b = new Uint8Array(PAGE_SIZE);
  const v = new DataView(b.buffer);
  let i = 0;
  for (const id of [...nsids].sort((x, y) => x - y)) {
    if (id > after && i < PAGE_SIZE / 4) v.setUint32(4 * i++, id, true);
  }
  return b;
}

/** Counters the SMART / Health log reports. */
export interface HealthCounters {
  /** 512-byte units. */
  blocksRead: bigint;
  blocksWritten: bigint;
  readCommands: bigint;
  writeCommands: bigint;
  powerCycles: bigint;
  unsafeShutdowns: bigint;
  startedAt: number;
}

function put128(v: DataView, offset: number, value: bigint): void {
  v.setBigUint64(offset, value & 0xffff_ffff_ffff_ffffn, true);
  v.setBigUint64(offset + 8, value >> 64n, true);
}

/** SMART / Health Information log (02h), 512 bytes. */
export function smartLog(c: HealthCounters): Uint8Array {
  const b = new Uint8Array(512);
  const v = new DataView(b.buffer);
  v.setUint16(1, 310, true); // composite temperature, K
  b[3] = 100; // available spare
  b[4] = 10; // spare threshold
  // Data units are thousands of 512-byte units, rounded up.
  put128(v, 32, (c.blocksRead + 999n) / 1000n);
  put128(v, 48, (c.blocksWritten + 999n) / 1000n);
  put128(v, 64, c.readCommands);
  put128(v, 80, c.writeCommands);
  put128(v, 112, c.powerCycles);
  put128(v, 128, BigInt(Math.floor((Date.now() - c.startedAt) / 3_600_000)));
  put128(v, 144, c.unsafeShutdowns);
  return b;
}

/** Firmware Slot Information log (03h), 512 bytes. */
export function firmwareSlotLog(firmware: string): Uint8Array {
  const b = new Uint8Array(512);
  b[0] = 1; // active slot 1
  ascii(b, 8, 8, firmware);
  return b;
}
