/**
 * The NVMe controller's saved state (DeviceState 'nvme-controller', version
 * 1): what migration, hot reload and live upgrade carry besides the
 * library's part (config space, MSI-X table and pending bits, INTx). It is
 * taken while the controller is held (core.ts hold(): nothing fetched,
 * commands already fetched completed into their CQs, completions that found
 * a CQ full parked), so no command is in flight in it:
 *
 * - registers: CC, CSTS, AQA, ASQ, ACQ, INTMS and an INTx/MSI interrupt
 *   waiting for INTMC;
 * - every SQ (base, size, head, tail, its CQ) and CQ (base, size, head,
 *   tail, phase, vector, IEN) with the completions parked in it, in order;
 * - the shadow doorbell and EventIdx page addresses (their contents are
 *   guest memory, migrated with it);
 * - the features (Get/Set Features), outstanding Async Event Requests (their
 *   CIDs), events waiting for one, the Error event mask;
 * - the namespaces attached (nsid, blocks, block size: checked, not
 *   restored: their data is the backing file's) and the SMART counters.
 *
 * The fields bound sizes and types; load() checks the rest before touching
 * anything (checkNvmeState: queue ids, sizes and addresses, vectors within
 * the MSI-X table, CQ bindings, parked completions, register consistency)
 * and refuses with a StateError naming what is wrong.
 */
import { defineDeviceState, Field, StateError, type DeviceState, type FieldValue } from 'vfio-user-ts';
import { MAX_QUEUED_EVENTS } from './async-events.js';
import { CC, CSTS, MAX_AERS, MAX_QUEUE_ENTRIES, PAGE_SIZE } from './constants.js';
import type { Namespace } from './namespace.js';

/** DeviceState.kind of the NVMe controller. */
export const NVME_STATE_KIND = 'nvme-controller';
/** The version of the saved state this module writes. */
export const NVME_STATE_VERSION = 1;

/** Queue ids 0 (admin) to 64: the most I/O queue pairs a controller offers is 64. */
const MAX_QUEUES = 65;
/** A CQ parks at most one completion per slot of each SQ bound to it, and the AERs. */
const MAX_PARKED = MAX_QUEUES * MAX_QUEUE_ENTRIES + MAX_AERS;
/** Namespaces a controller may have (a bound for the field; the controller's own count is checked). */
const MAX_NAMESPACES = 1024;

const parkedCompletion = Field.struct({
  /** The SQ of the command (its id goes into the entry). */
  sqid: Field.u16(),
  cid: Field.u16(),
  /** 15-bit status. */
  status: Field.u16(),
  /** Dword 0. */
  result: Field.u32(),
  /** SQ head when it completed (the entry's SQHD). */
  sqhd: Field.u16(),
  /** Counts against its SQ's in-flight limit (all but Async Event Requests). */
  counted: Field.bool(),
});

const completionQueue = Field.struct({
  id: Field.u16(),
  base: Field.u64(),
  size: Field.u16(),
  head: Field.u16(),
  tail: Field.u16(),
  phase: Field.u8(),
  ien: Field.bool(),
  iv: Field.u16(),
  parked: Field.array(parkedCompletion, MAX_PARKED),
});

const submissionQueue = Field.struct({
  id: Field.u16(),
  base: Field.u64(),
  size: Field.u16(),
  cqid: Field.u16(),
  head: Field.u16(),
  tail: Field.u16(),
});

const features = Field.struct({
  arbitration: Field.u32(),
  powerState: Field.u8(),
  overTemp: Field.u16(),
  underTemp: Field.u16(),
  errorRecovery: Field.u32(),
  volatileWriteCache: Field.bool(),
  grantedQueues: Field.u16(),
  coalesceThreshold: Field.u8(),
  coalesceTime: Field.u8(),
  coalesceDisabled: Field.array(Field.u16(), MAX_QUEUES),
  writeAtomicity: Field.u8(),
  asyncEventConfig: Field.u32(),
});

/** The saved state's fields, version 1. */
export const nvmeStateFields = Field.struct({
  registers: Field.struct({
    cc: Field.u32(),
    csts: Field.u32(),
    aqa: Field.u32(),
    asq: Field.u64(),
    acq: Field.u64(),
    intms: Field.u32(),
    /** An INTx/MSI interrupt came while INTMS masked it. */
    interruptMasked: Field.bool(),
  }),
  ioQueuesCreated: Field.bool(),
  submissionQueues: Field.array(submissionQueue, MAX_QUEUES),
  completionQueues: Field.array(completionQueue, MAX_QUEUES),
  shadowDoorbells: Field.optional(Field.struct({ dbs: Field.u64(), eis: Field.u64() })),
  features,
  asyncEvents: Field.struct({
    requests: Field.array(Field.u16(), MAX_AERS),
    events: Field.array(Field.u32(), MAX_QUEUED_EVENTS),
    errorMasked: Field.bool(),
  }),
  namespaces: Field.array(
    Field.struct({ nsid: Field.u32(), blocks: Field.u64(), lbaSize: Field.u16() }),
    MAX_NAMESPACES,
  ),
  health: Field.struct({
    blocksRead: Field.u64(),
    blocksWritten: Field.u64(),
    readCommands: Field.u64(),
    writeCommands: Field.u64(),
    powerCycles: Field.u64(),
    unsafeShutdowns: Field.u64(),
  }),
});

/** A saved NVMe controller state (version 1). */
export type NvmeSavedState = FieldValue<typeof nvmeStateFields>;

/** What a state is checked against: this controller's limits and namespaces. */
export interface NvmeStateLimits {
  /** Most I/O queue pairs (NvmeControllerOptions.queues). */
  maxIoQueues: number;
  /** MSI-X vectors. */
  vectors: number;
  namespaces: readonly Namespace[];
}

function refuse(why: string): never {
  throw new StateError(`state of '${NVME_STATE_KIND}': ${why}`);
}

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/** A queue's memory: page aligned, not 0, and not wrapping past 2^64. */
function checkQueueMemory(what: string, base: bigint, bytes: number): void {
  if (base === 0n || base % BigInt(PAGE_SIZE) !== 0n) refuse(`${what} base ${hex(base)} is not a page-aligned address`);
  if (base + BigInt(bytes) > 1n << 64n) refuse(`${what} at ${hex(base)} runs past the end of the address space`);
}

function checkRegisters(s: NvmeSavedState, limits: NvmeStateLimits): boolean {
  const r = s.registers;
  const en = (r.cc & CC.EN) !== 0;
  const rdy = (r.csts & CSTS.RDY) !== 0;
  if ((r.csts & ~0xf) !== 0) refuse(`CSTS ${hex(r.csts)} has reserved bits set`);
  const shst = (r.csts >>> CSTS.SHST_SHIFT) & 3;
  if (shst !== CSTS.SHST_NORMAL && shst !== CSTS.SHST_COMPLETE)
    refuse(`CSTS ${hex(r.csts)}: shutdown status ${shst} (a state is saved with no shutdown in progress)`);
  if (!en && rdy) refuse(`CC.EN clear with CSTS.RDY set (a state is saved with no reset in progress)`);
  if ((r.aqa & ~0x0fff0fff) !== 0) refuse(`AQA ${hex(r.aqa)} has reserved bits set`);
  if ((r.asq & 0xfffn) !== 0n || (r.acq & 0xfffn) !== 0n)
    refuse(`ASQ ${hex(r.asq)} / ACQ ${hex(r.acq)} are not page aligned`);
  const running = en && rdy;
  if (running) {
    const iosqes = (r.cc >>> CC.IOSQES_SHIFT) & 0xf;
    const iocqes = (r.cc >>> CC.IOCQES_SHIFT) & 0xf;
    const mps = (r.cc >>> CC.MPS_SHIFT) & 0xf;
    const css = (r.cc >>> CC.CSS_SHIFT) & 7;
    if (mps !== 0 || css !== 0 || iosqes !== 6 || iocqes !== 4)
      refuse(`enabled with CC ${hex(r.cc)}, which this controller never enables with`);
  }
  const f = s.features;
  if (f.grantedQueues > limits.maxIoQueues)
    refuse(`${f.grantedQueues} I/O queues granted, this controller has ${limits.maxIoQueues}`);
  if ((f.powerState & 0x1f) !== 0) refuse(`power state ${f.powerState}`);
  if (f.errorRecovery > 0x1ffff || f.writeAtomicity > 1)
    refuse('Error Recovery or Write Atomicity has reserved bits set');
  const disabled = new Set<number>();
  for (const iv of f.coalesceDisabled) {
    if (iv >= limits.vectors) refuse(`coalescing disabled for vector ${iv}, this controller has ${limits.vectors}`);
    if (disabled.has(iv)) refuse(`coalescing disabled for vector ${iv} twice`);
    disabled.add(iv);
  }
  return running;
}

function checkNamespaces(s: NvmeSavedState, limits: NvmeStateLimits): void {
  const here = limits.namespaces.map((ns) => `${ns.nsid}:${ns.blocks}x${ns.lbaSize}`).join(', ');
  const saved = s.namespaces.map((ns) => `${ns.nsid}:${ns.blocks}x${ns.lbaSize}`).join(', ');
  if (here !== saved) refuse(`namespaces (nsid:blocks x block size) ${saved || 'none'}, this controller has ${here}`);
}

/**
 * Check a decoded state against this controller (what its fields cannot
 * express): StateError naming the first problem. Pure: nothing changes.
 */
function checkNvmeState(s: NvmeSavedState, limits: NvmeStateLimits): void {
  checkNamespaces(s, limits);
  const running = checkRegisters(s, limits);
  const r = s.registers;
  if (!running) {
    if (s.submissionQueues.length > 0 || s.completionQueues.length > 0)
      refuse('queues exist while the controller is not enabled');
    if (s.asyncEvents.requests.length > 0 || s.asyncEvents.events.length > 0 || s.shadowDoorbells)
      refuse('Async Event Requests, events or shadow doorbells while the controller is not enabled');
    return;
  }
  const maxQid = s.features.grantedQueues || limits.maxIoQueues;
  const cqs = new Map<number, NvmeSavedState['completionQueues'][number]>();
  for (const cq of s.completionQueues) {
    const what = `CQ ${cq.id}`;
    if (cq.id > maxQid) refuse(`${what}: queue id above the ${maxQid} I/O queues`);
    if (cqs.has(cq.id)) refuse(`${what} twice`);
    cqs.set(cq.id, cq);
    if (cq.size < 2 || cq.size > MAX_QUEUE_ENTRIES) refuse(`${what}: size ${cq.size}`);
    if (cq.head >= cq.size || cq.tail >= cq.size)
      refuse(`${what}: head ${cq.head} / tail ${cq.tail} past its size ${cq.size}`);
    if (cq.phase > 1) refuse(`${what}: phase ${cq.phase}`);
    if (cq.iv >= limits.vectors)
      refuse(`${what}: vector ${cq.iv}, this controller has ${limits.vectors} MSI-X vectors`);
    checkQueueMemory(what, cq.base, cq.size * 16);
  }
  const sqs = new Map<number, NvmeSavedState['submissionQueues'][number]>();
  for (const sq of s.submissionQueues) {
    const what = `SQ ${sq.id}`;
    if (sq.id > maxQid) refuse(`${what}: queue id above the ${maxQid} I/O queues`);
    if (sqs.has(sq.id)) refuse(`${what} twice`);
    sqs.set(sq.id, sq);
    if (sq.size < 2 || sq.size > MAX_QUEUE_ENTRIES) refuse(`${what}: size ${sq.size}`);
    if (sq.head >= sq.size || sq.tail >= sq.size)
      refuse(`${what}: head ${sq.head} / tail ${sq.tail} past its size ${sq.size}`);
    if ((sq.id === 0) !== (sq.cqid === 0)) refuse(`${what} is bound to CQ ${sq.cqid}`);
    if (!cqs.has(sq.cqid)) refuse(`${what} is bound to CQ ${sq.cqid}, which does not exist`);
    checkQueueMemory(what, sq.base, sq.size * 64);
  }
  const adminSq = sqs.get(0);
  const adminCq = cqs.get(0);
  if (!adminSq || !adminCq) refuse('enabled without admin queues');
  if (adminSq.base !== r.asq || adminCq.base !== r.acq)
    refuse(`admin queues at ${hex(adminSq.base)} / ${hex(adminCq.base)}, ASQ / ACQ say ${hex(r.asq)} / ${hex(r.acq)}`);
  if (adminSq.size !== (r.aqa & 0xfff) + 1 || adminCq.size !== ((r.aqa >>> 16) & 0xfff) + 1)
    refuse(`admin queue sizes ${adminSq.size} / ${adminCq.size}, AQA says ${hex(r.aqa)}`);
  if (adminCq.iv !== 0 || !adminCq.ien) refuse('the admin CQ must interrupt on vector 0');
  if (s.submissionQueues.length > 1 || s.completionQueues.length > 1) {
    if (!s.ioQueuesCreated) refuse('I/O queues exist but none was created');
  }

  // Parked completions: of an SQ bound to that CQ, at most one per SQ slot (AERs aside).
  const parkedPerSq = new Map<number, number>();
  let aersParked = 0;
  for (const cq of s.completionQueues) {
    for (const p of cq.parked) {
      const sq = sqs.get(p.sqid);
      if (sq?.cqid !== cq.id) refuse(`CQ ${cq.id}: a parked completion of SQ ${p.sqid}, which is not bound to it`);
      if (p.sqhd >= sq.size) refuse(`CQ ${cq.id}: a parked completion with SQ head ${p.sqhd} past SQ ${sq.id}'s size`);
      if (p.status > 0x7fff) refuse(`CQ ${cq.id}: a parked completion with status ${hex(p.status)}`);
      if (p.counted) {
        const n = (parkedPerSq.get(sq.id) ?? 0) + 1;
        if (n > sq.size) refuse(`SQ ${sq.id}: more parked completions than its ${sq.size} slots`);
        parkedPerSq.set(sq.id, n);
      } else {
        if (sq.id !== 0) refuse(`CQ ${cq.id}: an uncounted (Async Event) completion of I/O SQ ${sq.id}`);
        if (++aersParked > MAX_AERS) refuse(`more than ${MAX_AERS} Async Event completions parked`);
      }
    }
  }
  const ev = s.asyncEvents;
  if (ev.requests.length > 0 && ev.events.length > 0)
    refuse('Async Event Requests and events waiting for one at the same time');
  if (ev.requests.length + aersParked > MAX_AERS) refuse(`more than ${MAX_AERS} Async Event Requests`);
  const db = s.shadowDoorbells;
  if (db) {
    for (const [name, addr] of [
      ['shadow doorbell', db.dbs],
      ['EventIdx', db.eis],
    ] as const) {
      if (addr === 0n || addr % BigInt(PAGE_SIZE) !== 0n || addr > (1n << 64n) - BigInt(PAGE_SIZE))
        refuse(`${name} page at ${hex(addr)} is not a page-aligned address`);
    }
    if (db.dbs === db.eis) refuse('shadow doorbell and EventIdx pages are the same page');
  }
}

/** What the controller (core.ts) does for its DeviceState. */
export interface NvmeStateHolder {
  /** The state now (the controller is held). */
  snapshot(): NvmeSavedState;
  /** Wait for a controller reset or shutdown in progress (bounded). */
  settled(): Promise<void>;
  /** Take a checked state (replaces everything; cannot fail). */
  restore(s: NvmeSavedState): void;
}

/** The controller's DeviceState (PciDeviceOptions.state). */
export function nvmeDeviceState(holder: NvmeStateHolder, limits: NvmeStateLimits): DeviceState<NvmeSavedState> {
  return defineDeviceState({
    kind: NVME_STATE_KIND,
    version: NVME_STATE_VERSION,
    schema: nvmeStateFields,
    save: async () => {
      await holder.settled();
      return holder.snapshot();
    },
    load: (s) => {
      checkNvmeState(s, limits);
      holder.restore(s);
    },
  });
}
