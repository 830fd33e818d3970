/**
 * The command engine: a new submission (an MMIO doorbell write, or a shadow
 * tail found by polling) starts its SQ's fetch loop, which parses each
 * entry and runs it (admin.ts, io.ts); every command is accounted for
 * until it completes, and when nothing is left in flight the I/O SQs'
 * shadow tails are watched (sq-poller.ts). Completions go out through
 * cq-writer.ts.
 *
 * Threading: everything runs on the event loop. Doorbell writes only record
 * the new value and start (or nudge) a fetch loop; commands run
 * asynchronously and post their completion when done, so a posted doorbell
 * write never waits for I/O. A read the page cache serves completes
 * synchronously, inside the doorbell write that fetched it.
 *
 * What a guest can make the fetch loop do is bounded three ways:
 * - per SQ, at most `size` commands between fetch and written completion
 *   (QEMU's bound: a CQ the guest never drains stops its SQs);
 * - per controller, at most MAX_INFLIGHT commands running;
 * - per event-loop turn, at most FETCH_BURST commands started, all SQs
 *   together; past that the fetch goes on in the next turn (setImmediate),
 *   so no ring content or shadow doorbell game (stale entries, a tail
 *   aliased onto the EventIdx page) holds the event loop, and every other
 *   device and connection of the process gets its turn.
 */
import type { LogLimiter } from 'vfio-user-ts';
import { SQE_SIZE, Status } from './constants.js';
import type { CommandTiming } from './command-timing.js';
import type { NvmeMetrics } from './metrics.js';
import type { AdminContext } from './context.js';
import type { CqWriter } from './cq-writer.js';
import { NvmeStatusError, type NvmeDma } from './host.js';
import {
  parseSubmissionEntry,
  queueView,
  type SubmissionEntry,
  type CommandResult,
  type SubmissionQueue,
} from './queues.js';
import type { QueueTable } from './queue-table.js';
import { executeAdmin } from './admin.js';
import { executeIo } from './io.js';
import { ErrorEvent, type AsyncEvents } from './async-events.js';
import { sqSlot, type ShadowDoorbells } from './shadow-doorbells.js';
import { SqPoller, type SqPollOptions } from './sq-poller.js';

/**
 * Commands running per controller. A guest could queue 64 x 1023 commands
 * of 1 MiB; past this, fetching pauses until some complete (bounds memory).
 */
const MAX_INFLIGHT = 256;

/**
 * Commands started per event-loop turn, all SQs together. A cached 4 KiB
 * read costs ~10 us, a cached 1 MiB read ~100 us: a turn holds the loop for
 * at most a few ms. Counted from the last pause, so a steady stream pays one
 * setImmediate per FETCH_BURST commands.
 */
const FETCH_BURST = 64;

/** The rest of the controller, as the engine uses it (core.ts wires it). */
export interface CommandEngineParts {
  /** What commands see: the controller (core.ts). */
  context: AdminContext;
  /** Guest memory for the queues themselves (commands use `context.dma`). */
  dma: NvmeDma;
  queues: QueueTable;
  completions: CqWriter;
  asyncEvents: AsyncEvents;
  /** The shadow doorbells, once configured. */
  shadow: () => ShadowDoorbells | undefined;
  /** Doorbells count only while the controller is enabled (registers.ts). */
  enabled: () => boolean;
  /** Guest memory failed us: controller fatal status. */
  fatal: (what: string, err: unknown) => void;
  /** Guest-triggered log lines (rate-limited). */
  limiter: LogLimiter;
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
  /** Commands running (started, handler not finished). */
  private running = 0;
  private idleWaiters: (() => void)[] = [];
  /** SQs whose fetch paused at MAX_INFLIGHT. */
  private readonly stalled = new Set<SubmissionQueue>();
  /** Commands started since the fetch loops last gave the event loop a turn. */
  private burst = 0;
  /** SQs whose fetch paused at FETCH_BURST: they go on in the next turn. */
  private readonly deferred = new Set<SubmissionQueue>();
  private nextTurn: NodeJS.Immediate | undefined;
  private readonly resumeDeferred = (): void => {
    this.nextTurn = undefined;
    this.burst = 0;
    const queues = [...this.deferred];
    this.deferred.clear();
    for (const sq of queues) if (!sq.fetching && !sq.deleted) void this.fetch(sq);
  };
  /** Commands fetched per SQ id since the controller was created (kept across resets; index = qid). */
  private readonly fetchedPerQueue: number[] = [];
  /** Doorbell register writes received (each one a trap in the guest and a message to us). */
  mmioDoorbells = 0;
  /** Watches shadow SQ tails while I/O flows (sq-poller.ts). */
  readonly poller: SqPoller;
  /**
   * Held for a saved state (hold()): doorbells and shadow tails are still
   * recorded, but nothing is fetched and nothing is polled until release().
   */
  private held = false;

  private readonly context: AdminContext;
  private readonly dma: NvmeDma;
  private readonly queues: QueueTable;
  private readonly completions: CqWriter;
  private readonly asyncEvents: AsyncEvents;
  private readonly shadow: () => ShadowDoorbells | undefined;
  private readonly enabled: () => boolean;
  private readonly fatal: (what: string, err: unknown) => void;
  private readonly limiter: LogLimiter;
  private readonly timing: CommandTiming | undefined;
  private readonly metrics: NvmeMetrics | undefined;

  constructor(parts: CommandEngineParts) {
    this.context = parts.context;
    this.dma = parts.dma;
    this.queues = parts.queues;
    this.completions = parts.completions;
    this.asyncEvents = parts.asyncEvents;
    this.shadow = parts.shadow;
    this.enabled = parts.enabled;
    this.fatal = parts.fatal;
    this.limiter = parts.limiter;
    this.timing = parts.timing;
    this.metrics = parts.metrics;
    this.poller = new SqPoller(
      {
        shadow: parts.shadow,
        inflight: () => this.running,
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
      if (!sq || value >= sq.size) {
        this.invalidDoorbell(qid, value, sq !== undefined, 'SQ tail');
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
      if (!cq || value >= cq.size) {
        this.invalidDoorbell(qid, value, cq !== undefined, 'CQ head');
        return;
      }
      cq.head = value;
      if (cq.pending.length > 0) this.completions.drainPending(cq); // held: they wait for release()
    }
  }

  /** A doorbell of a queue that does not exist, or a value beyond its queue: ignored, logged (rate-limited), an Error event. */
  private invalidDoorbell(qid: number, value: number, exists: boolean, what: string): void {
    this.limiter.warn('invalid-doorbell', { qid, value }, `nvme: invalid ${what} doorbell write ignored`);
    this.asyncEvents.guestError(exists ? ErrorEvent.INVALID_DOORBELL_VALUE : ErrorEvent.INVALID_DOORBELL_REGISTER);
  }

  /** Fetch and start every entry between head and tail (within the limits above), then (with shadow doorbells) re-arm EventIdx. */
  private async fetch(sq: SubmissionQueue): Promise<void> {
    if (this.held) return; // release() fetches every SQ
    sq.fetching = true;
    const gen = this.generation;
    try {
      for (;;) {
        while (sq.head !== sq.tail && !sq.deleted && gen === this.generation) {
          if (this.paused(sq)) return;
          const count = (sq.tail > sq.head ? sq.tail : sq.size) - sq.head;
          let v = queueView(this.dma, sq, SQE_SIZE, 'read');
          let first = sq.head * SQE_SIZE;
          if (!v) {
            const addr = sq.base + BigInt(sq.head * SQE_SIZE);
            const bytes = await this.dma.read(addr, count * SQE_SIZE);
            if (this.gone(sq, gen)) return;
            v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
            first = 0;
          }
          for (let i = 0; i < count; i++) {
            if (i > 0 && this.paused(sq)) return;
            const cmd = parseSubmissionEntry(v, first + i * SQE_SIZE);
            sq.head = sq.head + 1 === sq.size ? 0 : sq.head + 1;
            sq.fetched++;
            this.fetchedPerQueue[sq.id] = (this.fetchedPerQueue[sq.id] ?? 0) + 1;
            this.start(sq, cmd);
            if (this.gone(sq, gen)) return; // the command deleted its own queue, or reset the controller
          }
        }
        const db = sq.id === 0 ? undefined : this.shadow();
        if (!db || sq.deleted || gen !== this.generation || this.isHeld()) return; // held during an await above
        if (this.poller.enabled && this.running === 0) {
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

  /** `sq` was deleted, or the controller reset since generation `gen` (a fetch loop ends). */
  private gone(sq: SubmissionQueue, gen: number): boolean {
    return sq.deleted || gen !== this.generation;
  }

  /** Whether `sq` must stop fetching now (and who resumes it): its own limit, the controller's, or the turn's. */
  private paused(sq: SubmissionQueue): boolean {
    if (this.held) return true; // release() fetches on
    if (sq.inflight >= sq.size) {
      sq.throttled = true; // cq-writer.ts: resumed when an entry of this SQ is written
      return true;
    }
    if (this.running >= MAX_INFLIGHT) {
      this.stalled.add(sq); // resumed when commands complete
      return true;
    }
    if (this.burst >= FETCH_BURST) {
      this.deferred.add(sq);
      this.nextTurn ??= setImmediate(this.resumeDeferred);
      return true;
    }
    return false;
  }

  /** `sq` was paused at its limit and one of its entries was just written: fetch on. */
  resume(sq: SubmissionQueue): void {
    sq.throttled = false;
    if (!sq.fetching && !sq.deleted && this.enabled()) void this.fetch(sq);
  }

  /**
   * Run one fetched command. A command that finishes synchronously (a read
   * the page cache serves) completes before this returns: no promise, no
   * microtask hop; the others complete when their promise settles.
   */
  private start(sq: SubmissionQueue, cmd: SubmissionEntry): void {
    sq.inflight++;
    this.running++;
    this.burst++;
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
   * like an AER, or the controller was reset since it started: then the
   * queues it belonged to are gone and the command is aborted without an
   * entry) and account for it.
   */
  private settle(
    gen: number,
    sq: SubmissionQueue,
    cmd: SubmissionEntry,
    t0: bigint,
    res: CommandResult | undefined,
    m0: number,
  ): void {
    try {
      if (res && gen === this.generation) {
        this.completions.post(sq, cmd.cid, res.status, res.result ?? 0);
        if (this.metrics !== undefined) this.metrics.completed(sq.id, cmd, res.status, m0);
      } else this.completions.retire(sq);
    } catch (err) {
      this.fatal('completing a command failed', err);
    } finally {
      this.finish(gen, t0);
    }
  }

  /** A command failed: complete it with its NVMe status (Internal Error for anything else). */
  private settleFailed(
    gen: number,
    sq: SubmissionQueue,
    cmd: SubmissionEntry,
    t0: bigint,
    err: unknown,
    m0: number,
  ): void {
    let st: number = Status.INTERNAL_ERROR;
    if (err instanceof NvmeStatusError) {
      st = err.status;
      this.limiter.debug(
        'command-failed',
        { sqid: sq.id, cid: cmd.cid, opcode: cmd.opcode, status: st, reason: err.message },
        'nvme: command failed',
      );
    } else {
      this.limiter.error(
        'internal-error',
        { err, sqid: sq.id, opcode: cmd.opcode },
        'nvme: command failed with an internal error',
      );
    }
    this.settle(gen, sq, cmd, t0, { status: st, result: 0 }, m0);
  }

  /** Bookkeeping after a command: timing, fetches paused at MAX_INFLIGHT, quiesce waiters. */
  private finish(gen: number, t0: bigint): void {
    if (this.timing !== undefined) this.timing.done(t0);
    --this.running;
    if (this.stalled.size > 0 && this.running < MAX_INFLIGHT / 2) {
      const resume = [...this.stalled];
      this.stalled.clear();
      for (const q of resume) if (!q.fetching && !q.deleted && gen === this.generation) void this.fetch(q);
    }
    if (this.running === 0) {
      if (gen === this.generation) this.watchIdleQueues();
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Nothing in flight any more: poll the I/O SQs' shadow tails (sq-poller.ts) until the guest submits again. */
  private watchIdleQueues(): void {
    if (!this.poller.enabled || !this.enabled() || this.held) return;
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

  /** Commands running now. */
  get inflight(): number {
    return this.running;
  }

  /** Resolves when no command is running. */
  quiesce(): Promise<void> {
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Whether hold() is in force (a method: it may change across the fetch loop's awaits). */
  private isHeld(): boolean {
    return this.held;
  }

  /**
   * Stop fetching (for a saved state): fetch loops stop before their next
   * entry, doorbells and shadow tails only record the new tail, polling
   * stops. Commands already fetched run on (quiesce() waits for them).
   */
  hold(): void {
    this.held = true;
    this.poller.clear();
  }

  /**
   * Fetch again after hold() (or a loaded state): every SQ takes its newest
   * tail (the shadow slot, for I/O SQs with shadow doorbells: the guest may
   * have written it without ringing while we held) and fetches up to it;
   * an idle I/O SQ re-arms its EventIdx (or is polled). Idempotent.
   */
  release(): void {
    this.held = false;
    if (!this.enabled()) return;
    const db = this.shadow();
    for (const sq of this.queues.submissionQueues) {
      if (!sq || sq.deleted) continue;
      if (db && sq.id !== 0) {
        const tail = db.read(sqSlot(sq.id));
        if (tail !== undefined && tail < sq.size) sq.tail = tail;
      }
      if (!sq.fetching) void this.fetch(sq);
    }
  }

  /**
   * A controller reset begins: commands still running finish, but their
   * completions are dropped; paused fetches are forgotten; polling stops
   * (its EventIdx slots go with the shadow pages).
   */
  reset(): void {
    this.generation++;
    this.stalled.clear();
    this.deferred.clear();
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
