/**
 * What a hostile NVMe guest driver does, as data: the action kinds of the
 * NVMe fuzz target and their seeded generator. An action is plain JSON (64-bit
 * values as hex strings) and is drawn from the seed alone, never from what
 * the device answered, so action i of a seed is the same on every run and a
 * subset of a list replays on a fresh device (the minimiser relies on it).
 * nvme-session.ts performs them.
 */
import { Rng } from './rng.js';

/** Guest-physical base of the fuzzer's memory: above 4 GiB with bit 31 set (catches offset and sign mix-ups). */
export const GPA = 0x1_8000_0000;
/** The memfd-backed guest RAM (mapped with its fd on even seeds, without on odd ones: see nvme-target.ts). */
export const MEM_SIZE = 4 << 20;
/** A second range, mapped without an fd: the device reaches it by DMA_READ/DMA_WRITE messages. */
export const EXTRA_GPA = GPA + 0x100_0000;
export const EXTRA_SIZE = 0x1_0000;
/** I/O queue ids the fuzzer keeps a ring slot for (the controller serves 1-4; 5-8 are refused ids). */
export const RING_SLOTS = 8;

/** Offsets into guest memory. */
export const Mem = {
  ADMIN_SQ: 0x0,
  ADMIN_CQ: 0x4000,
  /** The liveness probe's Identify buffer; its write and read buffers are the two pages below. */
  PROBE_DATA: 0xf000,
  /** I/O queue q's rings: SQ at RINGS + (q-1)*RING_STRIDE, CQ RING_CQ bytes further. */
  RINGS: 0x1_0000,
  RING_STRIDE: 0x2_0000,
  RING_CQ: 0x1_0000,
  SHADOW_DB: 0x11_0000,
  EVENT_IDX: 0x11_1000,
  /** 16 PRP list pages. */
  PRP_LISTS: 0x12_0000,
  PRP_LIST_PAGES: 16,
  /** 2 MiB of data pages. */
  DATA: 0x20_0000,
  DATA_PAGES: 512,
} as const;

/** The probe's admin queue size (entries). */
export const PROBE_ADMIN_ENTRIES = 32;

/** One submission queue entry, as the fuzzer writes it. */
export interface SqeSpec {
  opcode: number;
  /** CDW0 bits 8-15 (FUSE, PSDT). */
  flags: number;
  cid: number;
  nsid: number;
  prp1: string;
  prp2: string;
  /** CDW10-15. */
  cdw: number[];
}

/** A PRP list page the action rewrites before its command is placed: entries at `at` get `values`. */
export interface PrpListEdit {
  page: number;
  at: number[];
  values: string[];
}

export type NvmeAction =
  /** Program AQA/ASQ/ACQ and write CC (a driver's enable, with hostile values now and then). */
  | { k: 'enable'; aqa: number; asq: string; acq: string; cc: number }
  /** A raw CC write: EN toggles, SHN, garbage. */
  | { k: 'cc'; value: number }
  /** An admin command into the admin SQ (rung or not). */
  | { k: 'admin'; sqe: SqeSpec; ring: boolean; list?: PrpListEdit }
  /** An I/O command into SQ `q` (created or not). */
  | { k: 'io'; q: number; sqe: SqeSpec; ring: boolean; list?: PrpListEdit }
  /** Set Features Number of Queues, then Create I/O CQ and SQ `q` (sizes, flags, addresses as drawn). */
  | {
      k: 'createPair';
      q: number;
      cqSize: number;
      sqSize: number;
      cqFlags: number;
      iv: number;
      cqAt: string;
      sqAt: string;
      sqFlags: number;
      cqid: number;
    }
  /** Delete I/O SQ or CQ `qid`, `times` times in one doorbell. */
  | { k: 'delete'; sq: boolean; qid: number; times: number }
  /** A doorbell write (SQ tail or CQ head) of queue `qid`: `value`, or with `relative` the driver's own tail or head plus value % 5 - 2. */
  | { k: 'doorbell'; qid: number; cq: boolean; value: number; relative: boolean; posted: boolean }
  /** Any BAR0 write or read, any size. */
  | { k: 'bar0Write'; offset: number; size: number; value: string; posted: boolean }
  | { k: 'bar0Read'; offset: number; size: number }
  /** BAR4: the MSI-X table and PBA (and past them). */
  | { k: 'bar4Write'; offset: number; size: number; value: string }
  /** A value into the shadow doorbell page or the EventIdx page. */
  | { k: 'shadow'; eventIdx: boolean; slot: number; value: number }
  /** Consume the completions waiting in CQ `q` and ring its head doorbell. */
  | { k: 'drain'; q: number }
  /** DMA_UNMAP mid-I/O (all, a whole map, or a range that splits one), DMA_MAP again. */
  | { k: 'unmap'; what: 'all' | 'ram' | 'extra' | 'range'; page: number; pages: number }
  | { k: 'remap' }
  /** DEVICE_RESET, and FLR through the PCIe capability. */
  | { k: 'reset' }
  | { k: 'flr' }
  /** SET_IRQS: eventfds on, off, masks, triggers, other indexes. */
  | { k: 'irqs'; index: number; op: 'enable' | 'disable' | 'mask' | 'unmask' | 'trigger'; start: number; count: number }
  /** The PCI Command register, the MSI-X Message Control word, or any config write. */
  | { k: 'command'; value: number }
  | { k: 'msixControl'; value: number }
  | { k: 'cfgWrite'; offset: number; size: number; value: number }
  /** Random bytes into queue rings, PRP lists or data. */
  | { k: 'scribble'; offset: number; bytes: number[] }
  /** Let the device run (0: one loop turn). */
  | { k: 'wait'; ms: number };

const hex = (n: number | bigint): string => '0x' + n.toString(16);

/** A guest address for a PRP: mostly good data pages, then unaligned, unmapped, aliased, huge. */
function prp(rng: Rng): string {
  switch (
    rng.weighted([
      [78, 'data'],
      [8, 'unaligned'],
      [5, 'lastPage'],
      [4, 'extra'],
      [5, 'outside'],
      [4, 'alias'],
      [4, 'random'],
    ] as const)
  ) {
    case 'data':
      return hex(GPA + Mem.DATA + rng.int(Mem.DATA_PAGES) * 4096);
    case 'unaligned':
      return hex(
        GPA + Mem.DATA + rng.int(Mem.DATA_PAGES) * 4096 + (rng.chance(0.5) ? rng.int(1024) * 4 : rng.int(4096)),
      );
    case 'lastPage':
      return hex(GPA + MEM_SIZE - 4096 + (rng.chance(0.3) ? rng.int(4096) : 0));
    case 'extra':
      return hex(EXTRA_GPA + rng.int(EXTRA_SIZE / 4096 + 1) * 4096);
    case 'outside':
      return hex(rng.pick([GPA - 4096, GPA + MEM_SIZE, 0, 4096, EXTRA_GPA + EXTRA_SIZE, 2 ** 52]));
    case 'alias':
      return hex(GPA + rng.pick([Mem.ADMIN_SQ, Mem.ADMIN_CQ, Mem.RINGS, Mem.SHADOW_DB, Mem.EVENT_IDX, Mem.PRP_LISTS]));
    case 'random':
      return rng.u64();
  }
}

/** PRP2: a data page, a PRP list page (often), or anything prp() gives. */
function prp2(rng: Rng): string {
  if (rng.chance(0.5))
    return hex(GPA + Mem.PRP_LISTS + rng.int(Mem.PRP_LIST_PAGES) * 4096 + (rng.chance(0.1) ? rng.int(512) * 8 : 0));
  return rng.chance(0.1) ? '0x0' : prp(rng);
}

/** A hostile edit of a PRP list page: pointers anywhere, one to the page itself, a chain back to its start. */
function listEdit(rng: Rng): PrpListEdit | undefined {
  if (!rng.chance(0.3)) return undefined;
  const page = rng.int(Mem.PRP_LIST_PAGES);
  const self = hex(GPA + Mem.PRP_LISTS + page * 4096);
  const at: number[] = [];
  const values: string[] = [];
  for (let i = rng.range(1, 4); i > 0; i--) {
    at.push(rng.chance(0.3) ? 511 : rng.int(512));
    values.push(
      rng.weighted([
        [3, 'self'],
        [1, 'next'],
        [6, 'any'],
      ] as const) === 'any'
        ? prp(rng)
        : rng.chance(0.5)
          ? self
          : hex(GPA + Mem.PRP_LISTS + ((page + 1) % Mem.PRP_LIST_PAGES) * 4096),
    );
  }
  return { page, at, values };
}

/** A 32-bit command dword: mostly the plausible `good`, sometimes mutated. */
function dword(rng: Rng, good: number): number {
  if (!rng.chance(0.12)) return good >>> 0;
  return rng.weighted([
    [3, () => rng.interesting32()],
    [2, () => (good ^ (1 << rng.int(32))) >>> 0],
    [1, () => rng.u32()],
  ] as const)();
}

function sqe(rng: Rng, opcode: number, nsid: number, cdw: number[], prp1?: string, prp2v?: string): SqeSpec {
  return {
    opcode: rng.chance(0.03) ? rng.int(256) : opcode,
    flags: rng.chance(0.05) ? rng.int(256) : 0,
    cid: rng.int(0x10000),
    nsid: rng.chance(0.1) ? rng.pick([0, 3, 0xffffffff, rng.u32()]) : nsid,
    prp1: prp1 ?? prp(rng),
    prp2: prp2v ?? prp2(rng),
    cdw: [0, 1, 2, 3, 4, 5].map((i) => dword(rng, cdw[i] ?? 0)),
  };
}

/** A queue id: mostly one the controller serves (1-4), sometimes the admin queue, unserved or absurd ids. */
function qid(rng: Rng): number {
  return rng.weighted([
    [75, () => rng.range(1, 4)],
    [3, () => 0],
    [12, () => rng.range(5, RING_SLOTS)],
    [5, () => rng.range(9, 70)],
    [5, () => rng.pick([0xff, 0xffff, rng.int(0x10000)])],
  ] as const)();
}

/** A queue size in entries (the command carries size - 1). */
function qsize(rng: Rng): number {
  return rng.weighted([
    [70, () => rng.pick([2, 4, 16, 32, 64, 256])],
    [10, () => rng.pick([1, 0, 1024, 4096, 65536])],
    [20, () => rng.range(2, 1024)],
  ] as const)();
}

function adminAction(rng: Rng): NvmeAction {
  const op = rng.weighted([
    [14, 'identify'],
    [8, 'getLog'],
    [12, 'features'],
    [4, 'abort'],
    [4, 'aer'],
    [2, 'keepAlive'],
    [10, 'dbbuf'],
    [10, 'createCq'],
    [10, 'createSq'],
    [8, 'deleteSq'],
    [6, 'deleteCq'],
    [6, 'random'],
  ] as const);
  const q = qid(rng);
  let e: SqeSpec;
  switch (op) {
    case 'identify':
      e = sqe(rng, 0x06, rng.pick([0, 1, 2]), [rng.pick([0, 1, 2, 3, 0x10, rng.int(256)])]);
      break;
    case 'getLog': {
      const numd = rng.pick([127, 1023, 0, 0xffff, rng.int(0x10000)]);
      e = sqe(rng, 0x02, rng.pick([0, 1, 0xffffffff]), [
        ((numd & 0xffff) << 16) | rng.pick([1, 2, 3, 4, rng.int(256)]),
        numd >>> 16,
        rng.int(4) * 512,
        0,
      ]);
      break;
    }
    case 'features':
      e = sqe(rng, rng.pick([0x09, 0x0a]), 0, [
        rng.pick([1, 2, 4, 5, 6, 7, 8, 9, 0x0a, 0x0b, 0x80, rng.int(256)]) | (rng.chance(0.1) ? 1 << 31 : 0),
        rng.interesting32(),
      ]);
      break;
    case 'abort':
      e = sqe(rng, 0x08, 0, [(rng.int(0x10000) << 16) | q]);
      break;
    case 'aer':
      e = sqe(rng, 0x0c, 0, []);
      break;
    case 'keepAlive':
      e = sqe(rng, 0x18, 0, []);
      break;
    case 'dbbuf': {
      // The shadow page and the EventIdx page: the layout's, the same page (issue 13), unaligned, unmapped.
      const good = (off: number) => hex(GPA + off);
      const shadow = rng.chance(0.6) ? good(Mem.SHADOW_DB) : prp(rng);
      const ei = rng.weighted([
        [5, good(Mem.EVENT_IDX)],
        [2, shadow],
        [3, prp(rng)],
      ] as const);
      e = sqe(rng, 0x7c, 0, [], shadow, ei);
      break;
    }
    case 'createCq':
      e = sqe(rng, 0x05, 0, [((qsize(rng) - 1) << 16) | q, (rng.int(8) << 16) | rng.int(4)], ring(rng, q, true));
      break;
    case 'createSq':
      e = sqe(rng, 0x01, 0, [((qsize(rng) - 1) << 16) | q, (qid(rng) << 16) | rng.int(8)], ring(rng, q, false));
      break;
    case 'deleteSq':
      e = sqe(rng, 0x00, 0, [q]);
      break;
    case 'deleteCq':
      e = sqe(rng, 0x04, 0, [q]);
      break;
    case 'random':
      e = sqe(rng, rng.int(256), rng.u32(), [rng.u32(), rng.u32(), rng.u32(), rng.u32(), rng.u32(), rng.u32()]);
      break;
  }
  const list = listEdit(rng);
  return { k: 'admin', sqe: e, ring: rng.chance(0.9), ...(list && { list }) };
}

/** Where queue `q`'s ring goes: its slot mostly, else an unaligned, aliased or unmapped address. */
function ring(rng: Rng, q: number, cq: boolean): string {
  const slot = q >= 1 && q <= RING_SLOTS ? q : rng.range(1, RING_SLOTS);
  if (rng.chance(0.85)) return hex(GPA + Mem.RINGS + (slot - 1) * Mem.RING_STRIDE + (cq ? Mem.RING_CQ : 0));
  return prp(rng);
}

function ioAction(rng: Rng): NvmeAction {
  const q = rng.chance(0.9) ? rng.range(1, 4) : qid(rng);
  const ns = rng.chance(0.55) ? 1 : 2;
  // Namespace 1: 8 MiB of 512-byte blocks; namespace 2: 8 MiB of 4 KiB blocks.
  const blocks = ns === 1 ? 16384 : 2048;
  const nlb = rng.weighted([
    [60, () => rng.int(8)],
    [20, () => rng.int(256)],
    [8, () => rng.pick([2047, 255, 511])],
    [4, () => rng.pick([0xffff, 4096, 8191])],
  ] as const)();
  const slba = rng.weighted([
    [75, () => rng.int(blocks - nlb > 0 ? blocks - nlb : 1)],
    [10, () => blocks - 1 - rng.int(4)],
    [10, () => blocks + rng.int(16)],
    [5, () => rng.u32()],
  ] as const)();
  const op = rng.weighted([
    [30, 0x01],
    [30, 0x02],
    [8, 0x00],
    [6, 0x05],
    [6, 0x08],
    [8, 0x09],
    [4, rng.int(256)],
  ] as const);
  const cdw =
    op === 0x09
      ? [rng.pick([0, 1, 255, rng.int(256)]), rng.pick([4, 2, 1, 7, rng.u32()])]
      : [
          slba >>> 0,
          rng.chance(0.05) ? rng.u32() : 0,
          (nlb & 0xffff) | (rng.chance(0.05) ? rng.int(16) << 26 : 0),
          0,
          0,
          0,
        ];
  const list = listEdit(rng);
  return { k: 'io', q, sqe: sqe(rng, op, ns, cdw), ring: rng.chance(0.85), ...(list && { list }) };
}

function bar0Offset(rng: Rng, size: number): number {
  return rng.weighted([
    [40, () => rng.int(0x40 / size) * size],
    [30, () => 0x1000 + rng.int(0x50 / size) * size],
    [15, () => rng.int(0x4000 / size) * size],
    [10, () => rng.int(0x4000)],
    [5, () => rng.pick([0x4000, 0x3ffc, 0x3fff, 0x10000])],
  ] as const)();
}

/** The whole generator: one action drawn from `rng`. */
export function nextNvmeAction(rng: Rng): NvmeAction {
  const kind = rng.weighted([
    [30, 'io'],
    [18, 'admin'],
    [1.5, 'enable'],
    [1.2, 'cc'],
    [3, 'createPair'],
    [2, 'delete'],
    [8, 'doorbell'],
    [6, 'bar0Write'],
    [2, 'bar0Read'],
    [1, 'bar4Write'],
    [3, 'shadow'],
    [12, 'drain'],
    [0.5, 'unmap'],
    [0.5, 'remap'],
    [0.5, 'reset'],
    [0.1, 'flr'],
    [2, 'irqs'],
    [1, 'command'],
    [0.5, 'msixControl'],
    [0.3, 'cfgWrite'],
    [1, 'scribble'],
    [6, 'wait'],
  ] as const);
  switch (kind) {
    case 'io':
      return ioAction(rng);
    case 'admin':
      return adminAction(rng);
    case 'enable': {
      const good = rng.chance(0.8);
      return {
        k: 'enable',
        aqa: good ? ((PROBE_ADMIN_ENTRIES - 1) << 16) | (PROBE_ADMIN_ENTRIES - 1) : rng.interesting32(),
        asq: good || rng.chance(0.5) ? hex(GPA + Mem.ADMIN_SQ) : prp(rng),
        acq: good || rng.chance(0.5) ? hex(GPA + Mem.ADMIN_CQ) : prp(rng),
        cc: good
          ? 0x460001
          : rng.pick([0x460001, 0x1, 0x460001 | (rng.int(8) << 7), 0x460001 | (rng.int(8) << 4), rng.u32()]),
      };
    }
    case 'cc':
      return {
        k: 'cc',
        value: rng.pick([0, 0x460000, 0x460001, 0x464001, 0x468001, 0x46c001, 0x4000, 0x8000, rng.u32()]),
      };
    case 'createPair': {
      const q = rng.chance(0.85) ? rng.range(1, 4) : qid(rng);
      return {
        k: 'createPair',
        q,
        cqSize: qsize(rng),
        sqSize: qsize(rng),
        cqFlags: rng.chance(0.9) ? 3 : rng.int(4),
        iv: rng.chance(0.85) ? q & 0xffff : rng.pick([0, 7, 64, 0xffff]),
        cqAt: ring(rng, q, true),
        sqAt: ring(rng, q, false),
        sqFlags: rng.chance(0.9) ? 1 : rng.int(8),
        cqid: rng.chance(0.85) ? q : qid(rng),
      };
    }
    case 'delete':
      return {
        k: 'delete',
        sq: rng.chance(0.6),
        qid: qid(rng),
        times: rng.weighted([
          [5, 1],
          [4, 2],
          [1, 3],
        ] as const),
      };
    case 'doorbell': {
      const value = rng.weighted([
        [50, () => rng.int(64)],
        [20, () => rng.int(1100)],
        [10, () => rng.interesting32()],
        [20, () => rng.int(4)],
      ] as const)();
      return {
        k: 'doorbell',
        qid: qid(rng),
        cq: rng.chance(0.4),
        value,
        relative: rng.chance(0.5),
        posted: rng.chance(0.7),
      };
    }
    case 'bar0Write': {
      const size = rng.pick([1, 2, 4, 4, 4, 8]);
      return {
        k: 'bar0Write',
        offset: bar0Offset(rng, size),
        size,
        value: rng.chance(0.5) ? hex(rng.interesting32()) : rng.u64(),
        posted: rng.chance(0.5),
      };
    }
    case 'bar0Read': {
      const size = rng.pick([1, 2, 4, 8]);
      return { k: 'bar0Read', offset: bar0Offset(rng, size), size };
    }
    case 'bar4Write': {
      const size = rng.pick([1, 2, 4, 8]);
      return { k: 'bar4Write', offset: rng.chance(0.8) ? rng.int(0x60) * 4 : rng.int(0x2000), size, value: rng.u64() };
    }
    case 'shadow':
      return {
        k: 'shadow',
        eventIdx: rng.chance(0.3),
        slot: rng.chance(0.9) ? rng.int(10) : rng.int(1024),
        value: rng.chance(0.7) ? rng.int(80) : rng.interesting32(),
      };
    case 'drain':
      return {
        k: 'drain',
        q: rng.weighted([
          [25, 0],
          [65, rng.range(1, 4)],
          [10, rng.range(5, RING_SLOTS)],
        ] as const),
      };
    case 'unmap':
      return {
        k: 'unmap',
        what: rng.pick(['all', 'ram', 'extra', 'range'] as const),
        page: rng.int(MEM_SIZE / 4096),
        pages: rng.range(1, 64),
      };
    case 'remap':
      return { k: 'remap' };
    case 'reset':
      return { k: 'reset' };
    case 'flr':
      return { k: 'flr' };
    case 'irqs':
      return {
        k: 'irqs',
        index: rng.weighted([
          [70, 2],
          [10, 0],
          [10, 1],
          [5, 3],
          [5, 4],
        ] as const),
        op: rng.pick(['enable', 'enable', 'disable', 'mask', 'unmask', 'trigger'] as const),
        start: rng.chance(0.8) ? 0 : rng.int(8),
        count: rng.pick([1, 2, 5, 0, 6]),
      };
    case 'command':
      return {
        k: 'command',
        value: rng.weighted([
          [60, 0x6],
          [15, 0x2],
          [10, 0x406],
          [5, 0],
          [10, rng.int(0x10000)],
        ] as const),
      };
    case 'msixControl':
      return { k: 'msixControl', value: rng.pick([0x8000, 0xc000, 0x4000, 0, rng.int(0x10000)]) };
    case 'cfgWrite': {
      const size = rng.pick([1, 2, 4]);
      // Not the BARs' base address registers: moving a BAR is the client's business, not the guest's.
      let offset = rng.int(0x1000 / size) * size;
      if (offset >= 0x10 && offset < 0x28) offset += 0x20;
      return { k: 'cfgWrite', offset, size, value: rng.u32() };
    }
    case 'scribble': {
      const n = rng.range(1, 64);
      const area = rng.pick([
        Mem.ADMIN_SQ,
        Mem.RINGS + rng.int(RING_SLOTS) * Mem.RING_STRIDE,
        Mem.PRP_LISTS,
        Mem.SHADOW_DB,
        Mem.DATA,
      ]);
      return { k: 'scribble', offset: area + rng.int(0x1000), bytes: Array.from({ length: n }, () => rng.int(256)) };
    }
    case 'wait':
      return {
        k: 'wait',
        ms: rng.weighted([
          [6, 0],
          [3, 1],
          [1, 3],
        ] as const),
      };
  }
}
