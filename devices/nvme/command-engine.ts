/**
 * The command engine: a new submission (an MMIO doorbell write, or a shadow
 * tail found by polling) starts its SQ's fetch loop, which parses each
 * entry and runs it (admin.ts, io.ts); every command is accounted for
 * until it completes: at most MAX_INFLIGHT at once, Delete SQ and quiesce
 * waiters, and when nothing is left in flight the I/O SQs' shadow tails
 * are watched (sq-poller.ts). Completions go out through cq-writer.ts.
 *
 * Threading: everything runs on the event loop. Doorbell writes only record
 * the new value and start (or nudge) a fetch loop; commands run
 * asynchronously and post their completion when done, so a posted doorbell
 * write never waits for I/O. A read the page cache serves completes
 * synchronously, inside the doorbell write that fetched it.
 */
import type { Logger } from 'vfio-user-ts';
import { SQE_SIZE, Status } from './constants.js';
import type { CommandTiming } from './command-timing.js';
import type { NvmeMetrics } from './metrics.js';
import type { AdminContext } from './context.js';
import type { CqWriter } from './cq-writer.js';
import { NvmeStatusError, type NvmeDma } from './host.js';
import { parseCommand, queueView, type Command, type CommandResult, type SubmissionQueue } from './queues.js';
import type { QueueTable } from './queue-table.js';
import { executeAdmin } from './admin.js';
import { executeIo } from './io.js';
import { sqSlot, type ShadowDoorbells } from './shadow-doorbells.js';
import { SqPoller, type SqPollOptions } from './sq-poller.js';

/**
 * Commands in flight per controller. A guest could queue 64 x 1023 commands
 * of 1 MiB; past this, fetching pauses until some complete (bounds memory).
 */
export const MAX_INFLIGHT = 256;

/** The rest of the controller, as the engine uses it (core.ts wires it). */
export interface CommandEngineParts {
  /** What commands see: the controller (core.ts). */
  context: AdminContext;
  queues: QueueTable;
  completions: CqWriter;
  /** The shadow doorbells, once configured. */
  shadow: () => ShadowDoorbells | undefined;
  /** Doorbells count only while the controller is enabled (registers.ts). */
  enabled: () => boolean;
  /** Guest memory failed us: controller fatal status. */
  fatal: (what: string, err: unknown) => void;
  /** Per-command timing, when asked for (command-timing.ts); undefined: no clock is read. */
  timing: CommandTiming | undefined;
  /** Polling of shadow SQ tails (sq-poller.ts). */
  poll: SqPollOptions;
  /** Per-command metrics (metrics.ts), when the controller has a registry; undefined: no cost. */
  metrics?: NvmeMetrics | undefined;
}

export class CommandEngine {
  /** Bumped by every reset: completions of older commands are dropped. */
  private generation = 0;
  private inflight = 0;
  private idleWaiters: (() => void)[] = [];
  /** SQs whose fetch paused at MAX_INFLIGHT. */
  private readonly stalled = new Set<SubmissionQueue>();
  /** Commands fetched per SQ id since the controller was created (kept across resets; index = qid). */
  private readonly fetchedPerQueue: number[] = [];
  /** Doorbell register writes received (each one a trap in the guest and a message to us). */
  mmioDoorbells = 0;
  /** Watches shadow SQ tails while I/O flows (sq-poller.ts). */
  readonly poller: SqPoller;

  private readonly context: AdminContext;
  private readonly dma: NvmeDma;
  private readonly log: Logger;
  private readonly queues: QueueTable;
  private readonly completions: CqWriter;
  private readonly shadow: () => ShadowDoorbells | undefined;
  private readonly enabled: () => boolean;
  private readonly fatal: (what: string, err: unknown) => void;
  private readonly timing: CommandTiming | undefined;
  private readonly metrics: NvmeMetrics | undefined;

  constructor(parts: CommandEngineParts) {
    this.context = parts.context;
    this.dma = parts.context.dma;
    this.log = parts.context.log;
    this.queues = parts.queues;
    this.completions = parts.completions;
    this.shadow = parts.shadow;
    this.enabled = parts.enabled;
    this.fatal = parts.fatal;
    this.timing = parts.timing;
    this.metrics = parts.metrics;
    this.poller = new SqPoller(
      {
        shadow: parts.shadow,
        inflight: () => this.inflight,
        moved: (sq, tail) => {
          sq.tail = tail;
          if (!sq.fetching) void this.fetch(sq);
        },
      },
      parts.poll,
    );
  }

  /** A doorbell register write: SQ y tail at index 2y, CQ y head at 2y + 1. */
  doorbell(index: number, value: number): void {
    this.mmioDoorbells++;
    if (!this.enabled()) return;
    const qid = index >> 1;
    if ((index & 1) === 0) {
      const sq = this.queues.sq(qid);
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
      const cq = this.queues.cq(qid);
      if (!cq || cq.deleted || value >= cq.size) {
        this.log.warn({ qid, value }, 'nvme: invalid CQ head doorbell write ignored');
        return;
      }
      cq.head = value;
      if (cq.pending.length > 0) this.completions.drainPending(cq);
    }
  }

  /** Fetch and start every entry between head and tail, then (with shadow doorbells) re-arm EventIdx. */
  private async fetch(sq: SubmissionQueue): Promise<void> {
    sq.fetching = true;
    const gen = this.generation;
    try {
      for (;;) {
        while (sq.head !== sq.tail && !sq.deleted && gen === this.generation) {
          const count = (sq.tail > sq.head ? sq.tail : sq.size) - sq.head;
          let v = queueView(this.dma, sq, SQE_SIZE);
          let first = sq.head * SQE_SIZE;
          if (!v) {
            const addr = sq.base + BigInt(sq.head * SQE_SIZE);
            const bytes = await this.dma.read(addr, count * SQE_SIZE);
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

  /**
   * Run one fetched command. A command that finishes synchronously (a read
   * the page cache serves) completes before this returns: no promise, no
   * microtask hop; the others complete when their promise settles.
   */
  private start(sq: SubmissionQueue, cmd: Command): void {
    sq.inflight++;
    this.inflight++;
    const gen = this.generation;
    const t0 = this.timing === undefined ? 0n : this.timing.start();
    const m0 = this.metrics === undefined ? 0 : performance.now();
    let outcome: CommandResult | undefined | Promise<CommandResult | undefined>;
    try {
      outcome = sq.id === 0 ? executeAdmin(this.context, sq, cmd) : executeIo(this.context, cmd);
    } catch (err) {
      this.settleFailed(gen, sq, cmd, t0, err, m0);
      return;
    }
    if (!(outcome instanceof Promise)) {
      this.settle(gen, sq, cmd, t0, outcome, m0);
      return;
    }
    outcome.then(
      (res) => this.settle(gen, sq, cmd, t0, res, m0),
      (err: unknown) => this.settleFailed(gen, sq, cmd, t0, err, m0),
    );
  }

  /**
   * A command finished: post its completion (unless it answers later itself,
   * like an AER, or the controller was reset since it started) and account for it.
   */
  private settle(
    gen: number,
    sq: SubmissionQueue,
    cmd: Command,
    t0: bigint,
    res: CommandResult | undefined,
    m0: number,
  ): void {
    try {
      if (res && gen === this.generation) {
        this.completions.post(sq, cmd.cid, res.status, res.result ?? 0);
        if (this.metrics !== undefined) this.metrics.completed(sq.id, cmd, res.status, m0);
      }
    } catch (err) {
      this.fatal('completing a command failed', err);
    } finally {
      this.finish(gen, sq, t0);
    }
  }

  /** A command failed: complete it with its NVMe status (Internal Error for anything else). */
  private settleFailed(gen: number, sq: SubmissionQueue, cmd: Command, t0: bigint, err: unknown, m0: number): void {
    let st: number = Status.INTERNAL_ERROR;
    if (err instanceof NvmeStatusError) {
      st = err.status;
      this.log.debug(
        { sqid: sq.id, cid: cmd.cid, opcode: cmd.opcode, status: st, reason: err.message },
        'nvme: command failed',
      );
    } else {
      this.log.error({ err, sqid: sq.id, opcode: cmd.opcode }, 'nvme: command failed with an internal error');
    }
    this.settle(gen, sq, cmd, t0, { status: st, result: 0 }, m0);
  }

  /** Bookkeeping after a command: timing, Delete SQ and quiesce waiters, fetches paused at MAX_INFLIGHT. */
  private finish(gen: number, sq: SubmissionQueue, t0: bigint): void {
    if (this.timing !== undefined) this.timing.done(t0);
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
    if (!this.poller.enabled || !this.enabled()) return;
    const db = this.shadow();
    if (!db) return;
    for (const sq of this.queues.submissionQueues) {
      if (!sq || sq.id === 0 || sq.deleted || sq.fetching) continue;
      const moved = this.poller.watch(db, sq);
      if (moved !== undefined) {
        sq.tail = moved;
        void this.fetch(sq);
      }
    }
  }

  /** Resolves when no command is in flight. */
  quiesce(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * A controller reset begins: commands still in flight finish, but their
   * completions are dropped; fetches paused at MAX_INFLIGHT are forgotten;
   * polling stops (its EventIdx slots go with the shadow pages).
   */
  reset(): void {
    this.generation++;
    this.stalled.clear();
    this.poller.clear();
  }

  /** Per-queue counters: commands fetched from each SQ id, cumulative. */
  queueStats(): { sqid: number; fetched: number }[] {
    const out: { sqid: number; fetched: number }[] = [];
    this.fetchedPerQueue.forEach((fetched, sqid) => {
      if (fetched) out.push({ sqid, fetched });
    });
    return out;
  }
}
