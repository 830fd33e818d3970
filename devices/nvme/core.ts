/**
 * The NVMe controller proper, without PCI: it talks to the world only
 * through NvmeHost (guest memory + interrupts), so it runs on any DMA space.
 * Its parts, one concern each:
 *
 * - registers.ts: BAR0 registers and the CC/CSTS state machine (enable,
 *   reset, shutdown)
 * - command-engine.ts: doorbells, the fetch loop, commands in flight
 * - command-dma.ts: guest memory for commands, revoked by each reset
 * - cq-writer.ts: completion entries; cq-interrupts.ts: their interrupts
 * - queue-table.ts: the SQs and CQs by queue id
 * - async-events.ts: Async Event Requests and events
 * - shadow-doorbells.ts: Doorbell Buffer Config; sq-poller.ts: polling
 * - features.ts: Get/Set Features state
 * - command-timing.ts: time per command (benchmarks), only when asked for
 *
 * Commands (admin.ts, io.ts) see the controller only as AdminContext /
 * IoContext (context.ts), which this class implements. Besides wiring the
 * parts, it says what a controller reset does to each one (beginReset,
 * endReset): the controller's whole state is the fields of this class and
 * of the parts.
 */
import { LogLimiter, type Logger } from 'vfio-user-ts';
import { MAX_TRANSFER, Reg } from './constants.js';
import { AsyncEvents } from './async-events.js';
import { BufferBudget } from './buffer-budget.js';
import { CommandDma } from './command-dma.js';
import { CommandEngine } from './command-engine.js';
import { CommandTiming } from './command-timing.js';
import type { AdminContext } from './context.js';
import { CqInterrupts } from './cq-interrupts.js';
import { CqWriter } from './cq-writer.js';
import { defaultFeatures, type FeatureState } from './features.js';
import type { NvmeHost } from './host.js';
import type { ControllerIdentity, HealthCounters } from './identify.js';
import type { Namespace } from './namespace.js';
import type { NvmeMetrics } from './metrics.js';
import { QueueTable } from './queue-table.js';
import { ControllerRegisters } from './registers.js';
import { ShadowDoorbells } from './shadow-doorbells.js';
import { DEFAULT_SQ_POLL, type SqPollOptions } from './sq-poller.js';
import type { NvmeSavedState, NvmeStateHolder } from './state.js';

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
  /** Time every command inside the controller (command-timing.ts). Default false: no clock is read per command. */
  timing?: boolean;
  /** How long a reset or shutdown waits for commands still running, in ms (registers.ts). */
  resetTimeoutMs: number;
  /** Count every command (metrics.ts). Default: none, no cost. */
  metrics?: NvmeMetrics | undefined;
}

/**
 * Bounce buffers a controller may hold at once (buffer-budget.ts): 32
 * transfers of MDTS (1 MiB) through host memory, or 16 Compares.
 */
const BOUNCE_BUFFER_BYTES = 32 * MAX_TRANSFER;

/** How doorbells arrived (NvmeController.doorbellStats). */
export interface DoorbellStats {
  mmio: number;
  polled: number;
  rearmed: number;
  spinMicros: number;
  windowMicros: number;
  backedOff: number;
}

export class ControllerCore implements AdminContext, NvmeStateHolder {
  // What commands see (context.ts).
  /** Guest memory for the commands of this controller life (replaced and revoked by every reset). */
  dma: CommandDma;
  readonly log: Logger;
  readonly limiter: LogLimiter;
  readonly buffers = new BufferBudget(BOUNCE_BUFFER_BYTES);
  readonly namespaces: Map<number, Namespace>;
  readonly identity: ControllerIdentity;
  readonly maxIoQueues: number;
  readonly vectors: number;
  features: FeatureState = defaultFeatures();
  readonly health: HealthCounters = {
    blocksRead: 0n,
    blocksWritten: 0n,
    readCommands: 0n,
    writeCommands: 0n,
    powerCycles: 1n,
    unsafeShutdowns: 0n,
    startedAt: Date.now(),
  };
  readonly queues: QueueTable;
  readonly asyncEvents: AsyncEvents;

  /** Per-command timing (CoreOptions.timing), else undefined. */
  readonly timing: CommandTiming | undefined;
  private readonly registers: ControllerRegisters;
  /** CQ interrupts: per-turn batching, coalescing, INTMS/INTMC (cq-interrupts.ts). */
  private readonly irq: CqInterrupts;
  private readonly completions: CqWriter;
  private readonly engine: CommandEngine;
  /** Shadow doorbell and EventIdx buffers (Doorbell Buffer Config). */
  private shadowDb: ShadowDoorbells | undefined;

  private readonly host: NvmeHost;

  constructor(host: NvmeHost, options: CoreOptions) {
    this.host = host;
    this.dma = new CommandDma(host.dma);
    this.log = options.log;
    this.limiter = new LogLimiter(options.log);
    this.namespaces = new Map(options.namespaces.map((ns) => [ns.nsid, ns]));
    this.identity = { ...options.identity, namespaces: options.namespaces.length };
    this.maxIoQueues = options.maxIoQueues;
    this.vectors = options.vectors;
    this.timing = options.timing ? new CommandTiming() : undefined;
    // The shadow doorbells, once configured (their pages may be unmapped for a while: reads are then undefined).
    const shadow = (): ShadowDoorbells | undefined => this.shadowDb;
    const fatal = (what: string, err: unknown): void => this.registers.fatal(what, err);
    this.irq = new CqInterrupts(host, () => this.features, this.limiter);
    this.registers = new ControllerRegisters(
      {
        createAdminQueues: (asq, asqs, acq, acqs) => {
          const cq = this.queues.createCq(0, acq, acqs, 0, true);
          this.queues.createSq(0, asq, asqs, cq);
        },
        beginReset: (full) => this.beginReset(full),
        quiesce: () => this.quiesceIo(),
        flush: () => this.flushAll(),
        endReset: () => this.endReset(),
      },
      this.irq,
      this.limiter,
      options.resetTimeoutMs,
    );
    this.queues = new QueueTable(shadow);
    this.completions = new CqWriter(host.dma, this.irq, shadow, fatal, (sq) => this.engine.resume(sq));
    this.asyncEvents = new AsyncEvents(this.completions);
    this.engine = new CommandEngine({
      context: this,
      dma: host.dma,
      queues: this.queues,
      completions: this.completions,
      asyncEvents: this.asyncEvents,
      shadow,
      enabled: () => this.registers.enabled,
      fatal,
      limiter: this.limiter,
      timing: this.timing,
      poll: options.poll ?? DEFAULT_SQ_POLL,
      metrics: options.metrics,
    });
    host.onBusMasterChange?.((enabled) => {
      if (enabled) return;
      // Views are plain memory: drop them, so every queue access asks the DMA space (which refuses it).
      this.queues.dropViews();
      this.shadowDb?.dropViews();
    });
  }

  /** Whether MSI-X is on (then each CQ has its own vector). */
  msixEnabled(): boolean {
    return this.host.msixEnabled();
  }

  /** A 4-byte (or smaller) register read at `offset` in BAR0. */
  readRegister(offset: number, size: 1 | 2 | 4): number {
    return this.registers.read(offset, size);
  }

  /** A register write at `offset` in BAR0. Doorbells must be 4-byte writes. */
  writeRegister(offset: number, size: 1 | 2 | 4, value: number): void {
    if (offset >= Reg.DOORBELLS) {
      if (size === 4 && (offset & 3) === 0) this.engine.doorbell((offset - Reg.DOORBELLS) >> 2, value >>> 0);
      else this.limiter.warn('doorbell-size', { offset, size }, 'nvme: ignoring a doorbell write that is not 4 bytes');
      return;
    }
    this.registers.write(offset, size, value);
  }

  /** PCI-level reset (DEVICE_RESET, FLR, lost connection): a full controller reset. */
  reset(): Promise<void> {
    return this.registers.reset();
  }

  /**
   * A controller reset begins (registers.ts): everything the guest set up
   * goes at once, and the commands still running lose their way to guest
   * memory. The registers then wait (bounded) for them before endReset.
   */
  private beginReset(full: boolean): void {
    this.dma.revoke();
    this.dma = new CommandDma(this.host.dma);
    this.engine.reset();
    this.queues.deleteAll();
    this.asyncEvents.clear();
    this.shadowDb = undefined;
    this.irq.reset(full);
  }

  /** The reset is done: features back to their defaults (registers.ts then clears CSTS). */
  private endReset(): void {
    this.features = defaultFeatures();
  }

  // ---- saved state (state.ts): hold, snapshot, restore, release

  /**
   * Quiesce for a saved state (PciDevice quiesce 'hold'): stop fetching (MMIO
   * doorbells and shadow tails are still recorded), let the commands already
   * fetched finish and post their completions (into a full CQ they are
   * parked), wait for a controller reset or shutdown in progress, make the
   * namespaces' writes durable (a destination on shared storage reads
   * them), raise every interrupt held back, and from then on write nothing
   * to guest memory until release(). Waits only for host work (file I/O,
   * DMA messages), never for the guest.
   */
  async hold(): Promise<void> {
    this.engine.hold();
    await this.engine.quiesce();
    await this.registers.settled();
    await this.engine.quiesce(); // a reset's end may have enabled the controller: still nothing fetched
    await this.flushAll();
    this.irq.fireAll(this.queues.completionQueues);
    this.completions.held = true;
  }

  /**
   * Run again after hold() or a loaded state: post the parked completions
   * that fit, then fetch every SQ up to its newest tail. Also runs after
   * every reset (PciDevice resume): idempotent.
   */
  release(): void {
    this.completions.held = false;
    for (const cq of this.queues.completionQueues) if (cq && cq.pending.length > 0) this.completions.drainPending(cq);
    this.engine.release();
  }

  /** Resolves when no controller reset or shutdown is in progress. */
  settled(): Promise<void> {
    return this.registers.settled();
  }

  /** The controller's state (state.ts), taken while held. */
  snapshot(): NvmeSavedState {
    const f = this.features;
    const sqs = this.queues.submissionQueues.filter((q) => q !== undefined);
    const cqs = this.queues.completionQueues.filter((q) => q !== undefined);
    return {
      registers: {
        ...this.registers.save(),
        intms: this.irq.mask,
        interruptMasked: this.irq.pendingWhileMasked,
      },
      ioQueuesCreated: this.queues.ioQueuesCreated,
      submissionQueues: sqs.map((sq) => ({
        id: sq.id,
        base: sq.base,
        size: sq.size,
        cqid: sq.cq.id,
        head: sq.head,
        tail: sq.tail,
      })),
      completionQueues: cqs.map((cq) => ({
        id: cq.id,
        base: cq.base,
        size: cq.size,
        head: cq.head,
        tail: cq.tail,
        phase: cq.phase,
        ien: cq.ien,
        iv: cq.iv,
        parked: cq.pending.toArray().map((c) => ({
          sqid: c.sq.id,
          cid: c.cid,
          status: c.status,
          result: c.result >>> 0,
          sqhd: c.sqhd,
          counted: c.counted,
        })),
      })),
      shadowDoorbells: this.shadowDb ? { dbs: this.shadowDb.dbs, eis: this.shadowDb.eis } : undefined,
      features: {
        arbitration: f.arbitration >>> 0,
        powerState: f.powerState,
        overTemp: f.overTemp,
        underTemp: f.underTemp,
        errorRecovery: f.errorRecovery,
        volatileWriteCache: f.volatileWriteCache,
        grantedQueues: f.grantedQueues,
        coalesceThreshold: f.coalesceThreshold,
        coalesceTime: f.coalesceTime,
        coalesceDisabled: [...f.coalesceDisabled].sort((a, b) => a - b),
        writeAtomicity: f.writeAtomicity,
        asyncEventConfig: f.asyncEventConfig >>> 0,
      },
      asyncEvents: this.asyncEvents.save(),
      namespaces: [...this.namespaces.values()].map((ns) => ({
        nsid: ns.nsid,
        blocks: BigInt(ns.blocks),
        lbaSize: ns.lbaSize,
      })),
      health: {
        blocksRead: this.health.blocksRead,
        blocksWritten: this.health.blocksWritten,
        readCommands: this.health.readCommands,
        writeCommands: this.health.writeCommands,
        powerCycles: this.health.powerCycles,
        unsafeShutdowns: this.health.unsafeShutdowns,
      },
    };
  }

  /**
   * Take a state checked by state.ts (checkNvmeState): what the controller
   * had goes as in a reset (nothing runs: it is held), then the registers,
   * queues with their parked completions, shadow doorbells, features and
   * events of the state. Fetching starts at release().
   */
  restore(s: NvmeSavedState): void {
    this.beginReset(true); // what the state replaces starts from a full reset's

    this.registers.restore(s.registers);
    this.irq.restore(s.registers.intms, s.registers.interruptMasked);
    for (const c of s.completionQueues) {
      const cq = this.queues.createCq(c.id, c.base, c.size, c.iv, c.ien);
      cq.head = c.head;
      cq.tail = c.tail;
      cq.phase = c.phase;
    }
    for (const q of s.submissionQueues) {
      const sq = this.queues.createSq(q.id, q.base, q.size, this.queues.cq(q.cqid)!);
      sq.head = q.head;
      sq.tail = q.tail;
    }
    for (const c of s.completionQueues) {
      const cq = this.queues.cq(c.id)!;
      for (const p of c.parked) {
        const sq = this.queues.sq(p.sqid)!;
        cq.pending.push({ result: p.result, sqhd: p.sqhd, sq, cid: p.cid, status: p.status, counted: p.counted });
        if (p.counted) sq.inflight++;
      }
    }
    this.queues.ioQueuesCreated = s.ioQueuesCreated;
    if (s.shadowDoorbells)
      this.shadowDb = ShadowDoorbells.restore(this.dma, s.shadowDoorbells.dbs, s.shadowDoorbells.eis);
    this.asyncEvents.restore(this.queues.sq(0), s.asyncEvents);
    const f = s.features;
    this.features = { ...f, coalesceDisabled: new Set(f.coalesceDisabled) };
    Object.assign(this.health, s.health);
  }

  /** Resolves when no command is running. */
  quiesceIo(): Promise<void> {
    return this.engine.quiesce();
  }

  /** Commands running now. */
  get inflight(): number {
    return this.engine.inflight;
  }

  async flushAll(): Promise<void> {
    await Promise.all([...this.namespaces.values()].map((ns) => ns.flush()));
  }

  /** Doorbell Buffer Config: two distinct pages in fd-backed guest memory (message-only memory would cost more than it saves). */
  configureDoorbellBuffer(dbs: bigint, eis: bigint): boolean {
    const db = ShadowDoorbells.open(this.dma, dbs, eis);
    if (!db) return false;
    this.shadowDb = db;
    db.seed(this.queues.submissionQueues, this.queues.completionQueues);
    return true;
  }

  /** Per-queue counters: commands fetched from each SQ id, cumulative. */
  queueStats(): { sqid: number; fetched: number }[] {
    return this.engine.queueStats();
  }

  /** MMIO doorbell writes, and what polling found and re-armed (NvmeController.doorbellStats). */
  doorbellStats(): DoorbellStats {
    const p = this.engine.poller.stats;
    return {
      mmio: this.engine.mmioDoorbells,
      polled: p.found,
      rearmed: p.rearmed,
      spinMicros: Math.round(p.spinMicros),
      windowMicros: p.windowMicros,
      backedOff: p.backedOff,
    };
  }
}
