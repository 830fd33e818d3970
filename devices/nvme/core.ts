/**
 * The NVMe controller proper: BAR0 registers, queues, command fetch and
 * completion, interrupts, shadow doorbells, reset and shutdown. It talks to
 * the world only through NvmeHost (guest memory + interrupts), so it runs on
 * any DMA space. Admin and I/O commands live in admin.ts and io.ts.
 *
 * Threading: everything runs on the event loop. Doorbell writes only record
 * the new value and start (or nudge) a fetch loop; commands run
 * asynchronously and post their completion when done, so a posted doorbell
 * write never waits for I/O. A read the page cache serves completes
 * synchronously, inside the doorbell write that fetched it.
 */
import type { Logger } from 'pino';
import {
  CC, CQE_SIZE, CSTS, MAX_QUEUE_ENTRIES, NVME_VERSION, Reg, SQE_SIZE, Status,
} from './constants.js';
import { NvmeStatusError, type NvmeHost } from './host.js';
import type { ControllerIdentity, HealthCounters } from './identify.js';
import type { Namespace } from './namespace.js';
import {
  parseCommand, type Command, type CommandResult, type Completion, type CompletionQueue, type SubmissionQueue,
} from './queues.js';
import { executeAdmin } from './admin.js';
import { executeIo } from './io.js';
import { cqSlot, ShadowDoorbells, sqSlot } from './shadow-doorbells.js';
import { CqInterrupts } from './cq-interrupts.js';
import { DEFAULT_SQ_POLL, SqPoller, type SqPollOptions } from './sq-poller.js';

export interface CoreOptions {
  identity: Omit<ControllerIdentity, 'namespaces'>;
  namespaces: Namespace[];
  /** Most I/O queue pairs offered (Set Features Number of Queues is clamped to this). */
  maxIoQueues: number;
  /** MSI-X vectors the device has (a CQ's IV must be below this). */
  vectors: number;
  log: Logger;
  /** Adaptive polling of shadow SQ tails (sq-poller.ts); default DEFAULT_SQ_POLL. */
  poll?: SqPollOptions;
}

/** Settable features (Get/Set Features), reset to defaults by a controller reset. */
export interface FeatureState {
  arbitration: number;
  powerState: number;
  /** Over/under temperature thresholds for sensor 0 (K). */
  overTemp: number;
  underTemp: number;
  errorRecovery: number;
  volatileWriteCache: boolean;
  /** Granted I/O queues (SQs and CQs), 1-based count; 0 until Set Features. */
  grantedQueues: number;
  /** Interrupt coalescing: threshold (0-based) and time (100 us units). */
  coalesceThreshold: number;
  coalesceTime: number;
  /** Vectors with coalescing disabled (Interrupt Vector Configuration CD). */
  coalesceDisabled: Set<number>;
  writeAtomicity: number;
  asyncEventConfig: number;
}

function defaultFeatures(): FeatureState {
  return {
    arbitration: 0,
    powerState: 0,
    overTemp: 0x157,
    underTemp: 0,
    errorRecovery: 0,
    volatileWriteCache: true,
    grantedQueues: 0,
    coalesceThreshold: 0,
    coalesceTime: 0,
    coalesceDisabled: new Set(),
    writeAtomicity: 0,
    asyncEventConfig: 0,
  };
}

/** An Async Event Request waiting for an event. */
interface PendingAer {
  sq: SubmissionQueue;
  cid: number;
}

/**
 * Commands in flight per controller. A guest could queue 64 x 1023 commands
 * of 1 MiB; past this, fetching pauses until some complete (bounds memory).
 */
export const MAX_INFLIGHT = 256;

/** CAP: MQES 1023, CQR, TO 7.5 s, DSTRD 0, CSS NVM, MPSMIN/MPSMAX 4 KiB. */
const CAP = BigInt(MAX_QUEUE_ENTRIES - 1) | (1n << 16n) | (15n << 24n) | (1n << 37n);

export class ControllerCore {
  readonly log: Logger;
  readonly namespaces: Map<number, Namespace>;
  readonly identity: ControllerIdentity;
  readonly maxIoQueues: number;
  readonly vectors: number;
  features: FeatureState = defaultFeatures();
  readonly health: HealthCounters = {
    blocksRead: 0n, blocksWritten: 0n, readCommands: 0n, writeCommands: 0n, powerCycles: 1n, unsafeShutdowns: 0n, startedAt: Date.now(),
  };

  /** Registers. */
  private cc = 0;
  private csts = 0;
  private aqa = 0;
  private asq = 0n;
  private acq = 0n;

  readonly sqs: (SubmissionQueue | undefined)[] = [];
  readonly cqs: (CompletionQueue | undefined)[] = [];
  /** Bumped by every reset: completions of older commands are dropped. */
  private generation = 0;
  private enabled = false;
  private inflight = 0;
  private idleWaiters: (() => void)[] = [];
  /** A reset or shutdown in progress (further resets chain after it). */
  private busy: Promise<void> = Promise.resolve();
  private aers: PendingAer[] = [];
  /** Events (Dword 0 of an AER completion) waiting for an AER. */
  private events: number[] = [];
  /** Shadow doorbell and EventIdx buffers (Doorbell Buffer Config). */
  private shadowDb: ShadowDoorbells | undefined;
  /** SQs whose fetch paused at MAX_INFLIGHT. */
  private readonly stalled = new Set<SubmissionQueue>();
  /** CQ interrupts: per-turn batching, coalescing, INTMS/INTMC (cq-interrupts.ts). */
  private readonly irq: CqInterrupts;
  /** Watches shadow SQ tails while I/O flows (sq-poller.ts). */
  readonly poller: SqPoller;

  constructor(readonly host: NvmeHost, options: CoreOptions) {
    this.log = options.log;
    this.namespaces = new Map(options.namespaces.map((ns) => [ns.nsid, ns]));
    this.identity = { ...options.identity, namespaces: options.namespaces.length };
    this.maxIoQueues = options.maxIoQueues;
    this.vectors = options.vectors;
    this.irq = new CqInterrupts(host, () => this.features, this.log);
    this.poller = new SqPoller({
      shadow: () => this.shadow(),
      inflight: () => this.inflight,
      moved: (sq, tail) => {
        sq.tail = tail;
        if (!sq.fetching) void this.fetch(sq);
      },
    }, options.poll ?? DEFAULT_SQ_POLL);
  }

  // ---------------------------------------------------------------- registers

  /** A 4-byte (or smaller) register read at `offset` in BAR0. */
  readRegister(offset: number, size: 1 | 2 | 4): number {
    const aligned = offset & ~3;
    const dword = this.readDword(aligned);
    const shift = (offset & 3) * 8;
    const mask = size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
    return ((dword >>> shift) & mask) >>> 0;
  }

  private readDword(offset: number): number {
    switch (offset) {
      case Reg.CAP: return Number(CAP & 0xffffffffn);
      case Reg.CAP + 4: return Number(CAP >> 32n);
      case Reg.VS: return NVME_VERSION;
      case Reg.INTMS:
      case Reg.INTMC: return this.irq.mask;
      case Reg.CC: return this.cc;
      case Reg.CSTS: return this.csts;
      case Reg.AQA: return this.aqa;
      case Reg.ASQ: return Number(this.asq & 0xffffffffn);
      case Reg.ASQ + 4: return Number(this.asq >> 32n);
      case Reg.ACQ: return Number(this.acq & 0xffffffffn);
      case Reg.ACQ + 4: return Number(this.acq >> 32n);
      default: return 0; // reserved, CMB, doorbells (write-only: read as 0)
    }
  }

  /** A register write at `offset` in BAR0. Doorbells must be 4-byte writes. */
  writeRegister(offset: number, size: 1 | 2 | 4, value: number): void {
    if (offset >= Reg.DOORBELLS) {
      if (size === 4 && (offset & 3) === 0) this.doorbell((offset - Reg.DOORBELLS) >> 2, value >>> 0);
      else this.log.warn({ offset, size }, 'nvme: ignoring a doorbell write that is not 4 bytes');
      return;
    }
    let dword = value >>> 0;
    if (size !== 4) {
      const aligned = offset & ~3;
      const shift = (offset & 3) * 8;
      const mask = (((1 << (size * 8)) - 1) << shift) >>> 0;
      dword = ((this.readDword(aligned) & ~mask) | ((value << shift) & mask)) >>> 0;
      offset = aligned;
    }
    switch (offset) {
      case Reg.INTMS:
        this.irq.setMask(dword);
        break;
      case Reg.INTMC:
        this.irq.clearMask(dword);
        break;
      case Reg.CC:
        this.writeCc(dword);
        break;
      case Reg.AQA:
        if (!this.enabled) this.aqa = dword & 0x0fff0fff;
        break;
      case Reg.ASQ: if (!this.enabled) this.asq = (this.asq & ~0xffffffffn) | BigInt((dword & ~0xfff) >>> 0); break;
      case Reg.ASQ + 4: if (!this.enabled) this.asq = (this.asq & 0xffffffffn) | (BigInt(dword) << 32n); break;
      case Reg.ACQ: if (!this.enabled) this.acq = (this.acq & ~0xffffffffn) | BigInt((dword & ~0xfff) >>> 0); break;
      case Reg.ACQ + 4: if (!this.enabled) this.acq = (this.acq & 0xffffffffn) | (BigInt(dword) << 32n); break;
      default:
        break; // read-only or reserved: ignored
    }
  }

  private writeCc(value: number): void {
    const old = this.cc;
    this.cc = value;
    const wasEn = (old & CC.EN) !== 0;
    const en = (value & CC.EN) !== 0;
    const shn = (value >>> CC.SHN_SHIFT) & 3;
    const oldShn = (old >>> CC.SHN_SHIFT) & 3;
    if (wasEn && !en) {
      this.log.debug('nvme: CC.EN 1 -> 0: controller reset');
      void this.chain(() => this.controllerReset(false));
    } else if (!wasEn && en) {
      void this.chain(async () => this.enable());
    }
    if (shn !== 0 && oldShn === 0) {
      this.log.debug({ shn }, 'nvme: shutdown requested');
      this.csts = (this.csts & ~(3 << CSTS.SHST_SHIFT)) | (CSTS.SHST_PROCESSING << CSTS.SHST_SHIFT);
      void this.chain(async () => {
        await this.quiesceIo();
        await this.flushAll();
        this.csts = (this.csts & ~(3 << CSTS.SHST_SHIFT)) | (CSTS.SHST_COMPLETE << CSTS.SHST_SHIFT);
        this.log.debug('nvme: shutdown complete');
      });
    } else if (shn === 0 && oldShn !== 0) {
      this.csts &= ~(3 << CSTS.SHST_SHIFT);
    }
  }

  /** Run `step` after any reset/shutdown in progress. */
  private chain(step: () => Promise<void>): Promise<void> {
    this.busy = this.busy.then(step).catch((err: unknown) => {
      this.log.error({ err }, 'nvme: controller state change failed');
      this.csts |= CSTS.CFS;
    });
    return this.busy;
  }

  private enable(): void {
    if ((this.cc & CC.EN) === 0 || this.enabled) return; // disabled again meanwhile
    const mps = (this.cc >>> CC.MPS_SHIFT) & 0xf;
    const css = (this.cc >>> CC.CSS_SHIFT) & 7;
    const iosqes = (this.cc >>> CC.IOSQES_SHIFT) & 0xf;
    const iocqes = (this.cc >>> CC.IOCQES_SHIFT) & 0xf;
    const asqs = (this.aqa & 0xfff) + 1;
    const acqs = ((this.aqa >>> 16) & 0xfff) + 1;
    const problems: string[] = [];
    if (mps !== 0) problems.push(`CC.MPS ${mps} (only 4 KiB pages)`);
    if (css !== 0) problems.push(`CC.CSS ${css}`);
    if (iosqes !== 6 || iocqes !== 4) problems.push(`CC.IOSQES/IOCQES ${iosqes}/${iocqes}`);
    if (asqs < 2 || acqs < 2) problems.push(`AQA ${this.aqa.toString(16)}`);
    if (this.asq === 0n || this.acq === 0n) problems.push('ASQ/ACQ unset');
    if (problems.length > 0) {
      this.log.warn({ problems }, 'nvme: cannot enable: controller fatal status');
      this.csts |= CSTS.CFS;
      return;
    }
    const cq = this.newCq(0, this.acq, acqs, 0, true);
    this.newSq(0, this.asq, asqs, cq);
    this.enabled = true;
    this.csts = (this.csts & ~CSTS.CFS) | CSTS.RDY;
    this.log.debug({ asqs, acqs }, 'nvme: controller enabled');
  }

  /**
   * Controller reset (CC.EN 1 -> 0, or a PCI-level reset when `full`): drop
   * every queue, wait for in-flight commands, flush the namespaces, and
   * clear RDY. `full` also resets the registers.
   */
  async controllerReset(full: boolean): Promise<void> {
    this.generation++;
    this.enabled = false;
    for (const cq of this.cqs) if (cq?.coalesceTimer) clearTimeout(cq.coalesceTimer);
    for (const sq of this.sqs) if (sq) sq.deleted = true;
    for (const cq of this.cqs) if (cq) cq.deleted = true;
    this.sqs.length = 0;
    this.cqs.length = 0;
    this.stalled.clear();
    this.poller.clear();
    this.aers = [];
    this.events = [];
    this.shadowDb = undefined;
    this.irq.reset(full);
    await this.quiesceIo();
    await this.flushAll();
    this.features = defaultFeatures();
    this.csts = 0;
    if (full) {
      this.cc = 0;
      this.aqa = 0;
      this.asq = 0n;
      this.acq = 0n;
    } else if ((this.cc & CC.EN) !== 0) {
      // Re-enabled while we were resetting.
      this.enable();
    }
  }

  /** PCI-level reset (DEVICE_RESET, FLR, lost connection): a full controller reset. */
  reset(): Promise<void> {
    this.cc = 0;
    return this.chain(() => this.controllerReset(true));
  }

  /** Resolves when no command is in flight. */
  quiesceIo(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  async flushAll(): Promise<void> {
    await Promise.all([...this.namespaces.values()].map((ns) => ns.flush()));
  }

  // ---------------------------------------------------------------- queues

  newCq(id: number, base: bigint, size: number, iv: number, ien: boolean): CompletionQueue {
    const cq: CompletionQueue = {
      id, base, size, tail: 0, head: 0, phase: 1, ien, iv, sqCount: 0, pending: [], unsignalled: 0, irqQueued: false, deleted: false, completed: 0,
    };
    this.cqs[id] = cq;
    if (id !== 0) this.shadow()?.setEventIdx(cqSlot(id), 0xffff);
    return cq;
  }

  newSq(id: number, base: bigint, size: number, cq: CompletionQueue): SubmissionQueue {
    const sq: SubmissionQueue = { id, base, size, cq, head: 0, tail: 0, fetching: false, inflight: 0, deleted: false, fetched: 0 };
    cq.sqCount++;
    this.sqs[id] = sq;
    if (id !== 0) this.shadow()?.setEventIdx(sqSlot(id), 0);
    return sq;
  }

  /** Delete an I/O SQ once its in-flight commands completed. */
  async deleteSq(sq: SubmissionQueue): Promise<void> {
    sq.deleted = true;
    if (sq.inflight > 0) await new Promise<void>((resolve) => (sq.onIdle = resolve));
    if (this.sqs[sq.id] === sq) this.sqs[sq.id] = undefined;
    sq.cq.sqCount--;
  }

  deleteCq(cq: CompletionQueue): void {
    cq.deleted = true;
    if (cq.coalesceTimer) clearTimeout(cq.coalesceTimer);
    if (this.cqs[cq.id] === cq) this.cqs[cq.id] = undefined;
  }

  /** Commands fetched per SQ id since the controller was created (kept across resets; index = qid). */
  readonly fetchedPerQueue: number[] = [];

  /** Per-queue counters: commands fetched from each SQ id, cumulative. */
  queueStats(): { sqid: number; fetched: number }[] {
    const out: { sqid: number; fetched: number }[] = [];
    this.fetchedPerQueue.forEach((fetched, sqid) => {
      if (fetched) out.push({ sqid, fetched });
    });
    return out;
  }

  /** Doorbell register writes received (each one a trap in the guest and a message to us). */
  mmioDoorbells = 0;

  private doorbell(index: number, value: number): void {
    this.mmioDoorbells++;
    if (!this.enabled) return;
    const qid = index >> 1;
    if ((index & 1) === 0) {
      const sq = this.sqs[qid];
      if (!sq || sq.deleted || value >= sq.size) {
        this.log.warn({ qid, value }, 'nvme: invalid SQ tail doorbell write ignored');
        return;
      }
      // With shadow doorbells the shadow slot is the newest tail the host wrote
      // (it writes it before ringing); a posted MMIO value can be older than
      // what polling already consumed, and must never move the tail back.
      const db = qid === 0 ? undefined : this.shadow();
      if (db) this.poller.doorbell();
      const shadowTail = db?.read(sqSlot(qid));
      sq.tail = shadowTail !== undefined && shadowTail < sq.size ? shadowTail : value;
      if (!sq.fetching) void this.fetch(sq);
    } else {
      const cq = this.cqs[qid];
      if (!cq || cq.deleted || value >= cq.size) {
        this.log.warn({ qid, value }, 'nvme: invalid CQ head doorbell write ignored');
        return;
      }
      cq.head = value;
      if (cq.pending.length > 0) this.drainPending(cq);
    }
  }

  /**
   * A view of the whole queue when it lies in fd-backed memory (cached; a
   * cached view whose mapping went away throws on access and is replaced).
   * Undefined: use DMA messages.
   */
  private queueView(q: SubmissionQueue | CompletionQueue, entrySize: number): DataView | undefined {
    if (q.dv) {
      try {
        q.dv.getUint8(0);
        return q.dv;
      } catch {
        q.dv = undefined;
      }
    }
    const view = this.host.dma.view(q.base, q.size * entrySize);
    if (view) q.dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
    return q.dv;
  }

  /** Fetch and start every entry between head and tail, then (with shadow doorbells) re-arm EventIdx. */
  private async fetch(sq: SubmissionQueue): Promise<void> {
    sq.fetching = true;
    const gen = this.generation;
    try {
      for (;;) {
        while (sq.head !== sq.tail && !sq.deleted && gen === this.generation) {
          const count = (sq.tail > sq.head ? sq.tail : sq.size) - sq.head;
          let v = this.queueView(sq, SQE_SIZE);
          let first = sq.head * SQE_SIZE;
          if (!v) {
            const addr = sq.base + BigInt(sq.head * SQE_SIZE);
            const bytes = await this.host.dma.read(addr, count * SQE_SIZE);
            if (sq.deleted || gen !== this.generation) return;
            v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
            first = 0;
          }
          for (let i = 0; i < count; i++) {
            if (this.inflight >= MAX_INFLIGHT) {
              this.stalled.add(sq); // resumed when commands complete
              return;
            }
            const cmd = parseCommand(v, first + i * SQE_SIZE);
            sq.head = sq.head + 1 === sq.size ? 0 : sq.head + 1;
            sq.fetched++;
            this.fetchedPerQueue[sq.id] = (this.fetchedPerQueue[sq.id] ?? 0) + 1;
            this.start(sq, cmd);
          }
        }
        const db = sq.id === 0 ? undefined : this.shadow();
        if (!db || sq.deleted || gen !== this.generation) return;
        if (this.poller.enabled && this.inflight === 0) {
          // Idle: watch the shadow tail for a while instead of asking for doorbell writes.
          const moved = this.poller.watch(db, sq);
          if (moved === undefined) return;
          sq.tail = moved;
          continue;
        }
        // Shadow doorbells: ask for a doorbell write past what we consumed, then
        // look again (the host may have moved the tail before it saw EventIdx).
        db.setEventIdx(sqSlot(sq.id), sq.tail);
        const shadow = db.read(sqSlot(sq.id));
        if (shadow === undefined || shadow === sq.tail || shadow >= sq.size) return;
        sq.tail = shadow;
      }
    } catch (err) {
      this.fatal(`fetching from SQ ${sq.id} failed`, err);
    } finally {
      sq.fetching = false;
    }
  }

  /** Commands completed and the time they spent inside the controller (fetch to completion), for benchmarks. */
  readonly timing = { commands: 0, nanoseconds: 0n };

  /**
   * Run one fetched command. A command that finishes synchronously (a read
   * the page cache serves) completes before this returns: no promise, no
   * microtask hop; the others complete when their promise settles.
   */
  private start(sq: SubmissionQueue, cmd: Command): void {
    sq.inflight++;
    this.inflight++;
    const gen = this.generation;
    const t0 = process.hrtime.bigint();
    let outcome: CommandResult | undefined | Promise<CommandResult | undefined>;
    try {
      outcome = sq.id === 0 ? executeAdmin(this, sq, cmd) : executeIo(this, cmd);
    } catch (err) {
      this.settleFailed(gen, sq, cmd, t0, err);
      return;
    }
    if (!(outcome instanceof Promise)) {
      this.settle(gen, sq, cmd, t0, outcome);
      return;
    }
    outcome.then(
      (res) => this.settle(gen, sq, cmd, t0, res),
      (err: unknown) => this.settleFailed(gen, sq, cmd, t0, err),
    );
  }

  /** A command finished: post its completion (unless it answers later itself, like an AER) and account for it. */
  private settle(gen: number, sq: SubmissionQueue, cmd: Command, t0: bigint, res: CommandResult | undefined): void {
    try {
      if (res) this.complete(gen, sq, cmd.cid, res.status, res.result ?? 0);
    } catch (err) {
      this.fatal('completing a command failed', err);
    } finally {
      this.finish(gen, sq, t0);
    }
  }

  /** A command failed: complete it with its NVMe status (Internal Error for anything else). */
  private settleFailed(gen: number, sq: SubmissionQueue, cmd: Command, t0: bigint, err: unknown): void {
    let st: number = Status.INTERNAL_ERROR;
    if (err instanceof NvmeStatusError) {
      st = err.status;
      this.log.debug({ sqid: sq.id, cid: cmd.cid, opcode: cmd.opcode, status: st, reason: err.message }, 'nvme: command failed');
    } else {
      this.log.error({ err, sqid: sq.id, opcode: cmd.opcode }, 'nvme: command failed with an internal error');
    }
    this.settle(gen, sq, cmd, t0, { status: st, result: 0 });
  }

  /** Bookkeeping after a command: counters, Delete SQ and quiesce waiters, fetches paused at MAX_INFLIGHT. */
  private finish(gen: number, sq: SubmissionQueue, t0: bigint): void {
    this.timing.commands++;
    this.timing.nanoseconds += process.hrtime.bigint() - t0;
    if (--sq.inflight === 0 && sq.onIdle) {
      sq.onIdle();
      sq.onIdle = undefined;
    }
    --this.inflight;
    if (this.stalled.size > 0 && this.inflight < MAX_INFLIGHT / 2) {
      const resume = [...this.stalled];
      this.stalled.clear();
      for (const q of resume) if (!q.fetching && !q.deleted && gen === this.generation) void this.fetch(q);
    }
    if (this.inflight === 0) {
      if (gen === this.generation) this.watchIdleQueues();
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Nothing in flight any more: poll the I/O SQs' shadow tails (sq-poller.ts) until the guest submits again. */
  private watchIdleQueues(): void {
    if (!this.poller.enabled || !this.enabled) return;
    const db = this.shadow();
    if (!db) return;
    for (const sq of this.sqs) {
      if (!sq || sq.id === 0 || sq.deleted || sq.fetching) continue;
      const moved = this.poller.watch(db, sq);
      if (moved !== undefined) {
        sq.tail = moved;
        void this.fetch(sq);
      }
    }
  }

  /** Post a completion for a command of `sq` (dropped if the controller was reset since it started). */
  complete(gen: number, sq: SubmissionQueue, cid: number, status: number, result: number): void {
    if (gen !== this.generation || sq.cq.deleted) return;
    const cq = sq.cq;
    const entry: Completion = { result, sqhd: sq.head, sqid: sq.id, cid, status };
    if (cq.pending.length > 0 || this.cqFull(cq)) {
      cq.pending.push(entry);
      if (cq.id !== 0) this.shadow()?.setEventIdx(cqSlot(cq.id), cq.head);
      return;
    }
    this.writeCqe(cq, entry);
  }

  private cqFull(cq: CompletionQueue): boolean {
    const next = cq.tail + 1 === cq.size ? 0 : cq.tail + 1;
    if (next !== cq.head) return false;
    if (cq.id !== 0) {
      const head = this.shadow()?.read(cqSlot(cq.id));
      if (head !== undefined && head < cq.size) cq.head = head;
    }
    return next === cq.head;
  }

  private drainPending(cq: CompletionQueue): void {
    while (cq.pending.length > 0 && !this.cqFull(cq)) this.writeCqe(cq, cq.pending.shift()!);
    if (cq.pending.length === 0 && cq.id !== 0) this.shadow()?.setEventIdx(cqSlot(cq.id), (cq.head - 1) & 0xffff);
  }

  private writeCqe(cq: CompletionQueue, e: Completion): void {
    const o = cq.tail * CQE_SIZE;
    const dw2 = (e.sqhd | (e.sqid << 16)) >>> 0;
    const dw3 = ((e.cid & 0xffff) | ((cq.phase | (e.status << 1)) << 16)) >>> 0;
    cq.tail = cq.tail + 1 === cq.size ? 0 : cq.tail + 1;
    if (cq.tail === 0) cq.phase ^= 1;
    cq.completed++;
    let v: DataView | undefined;
    try {
      v = this.queueView(cq, CQE_SIZE);
    } catch (err) {
      this.fatal(`CQ ${cq.id} at 0x${cq.base.toString(16)} is not in guest memory`, err);
      return;
    }
    if (v) {
      v.setUint32(o, e.result >>> 0, true);
      v.setUint32(o + 4, 0, true);
      v.setUint32(o + 8, dw2, true);
      v.setUint32(o + 12, dw3, true); // the phase tag goes last
      this.irq.signal(cq);
      return;
    }
    const bytes = new Uint8Array(CQE_SIZE);
    const m = new DataView(bytes.buffer);
    m.setUint32(0, e.result >>> 0, true);
    m.setUint32(8, dw2, true);
    m.setUint32(12, dw3, true);
    // By message: interrupt only once the entry is in guest memory.
    this.host.dma.write(cq.base + BigInt(o), bytes).then(
      () => this.irq.signal(cq),
      (err: unknown) => this.fatal(`writing CQ ${cq.id} entry failed`, err),
    );
  }

  // ---------------------------------------------------------------- async events

  /** Queue an Async Event Request (admin opcode 0Ch). */
  addAer(sq: SubmissionQueue, cid: number): void {
    this.aers.push({ sq, cid });
    this.deliverEvents();
  }

  get aerCount(): number {
    return this.aers.length;
  }

  /** Report an asynchronous event (Dword 0 of the AER completion). */
  raiseEvent(dword0: number): void {
    this.events.push(dword0);
    this.deliverEvents();
  }

  private deliverEvents(): void {
    while (this.aers.length > 0 && this.events.length > 0) {
      const aer = this.aers.shift()!;
      this.complete(this.generation, aer.sq, aer.cid, Status.SUCCESS, this.events.shift()!);
    }
  }

  // ---------------------------------------------------------------- shadow doorbells

  /** Doorbell Buffer Config: both pages must be in fd-backed guest memory (message-only memory would cost more than it saves). */
  configureDoorbellBuffer(dbs: bigint, eis: bigint): boolean {
    const db = ShadowDoorbells.open(this.host.dma, dbs, eis);
    if (!db) return false;
    this.shadowDb = db;
    // Start from the doorbell values we know, and ask for a write on the next submission.
    for (const sq of this.sqs) {
      if (!sq || sq.id === 0) continue;
      db.write(sqSlot(sq.id), sq.tail);
      db.setEventIdx(sqSlot(sq.id), sq.tail);
    }
    for (const cq of this.cqs) {
      if (!cq || cq.id === 0) continue;
      db.write(cqSlot(cq.id), cq.head);
      db.setEventIdx(cqSlot(cq.id), (cq.head - 1) & 0xffff);
    }
    return true;
  }

  /** The shadow doorbells, once configured (their pages may be unmapped for a while: reads are then undefined). */
  private shadow(): ShadowDoorbells | undefined {
    return this.shadowDb;
  }

  // ---------------------------------------------------------------- errors

  private fatal(what: string, err: unknown): void {
    this.log.error({ err }, `nvme: ${what}: controller fatal status`);
    this.csts |= CSTS.CFS;
  }
}
