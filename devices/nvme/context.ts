/**
 * What command handlers see of the controller: io.ts gets IoContext,
 * admin.ts AdminContext (the role QEMU's hw/nvme/nvme.h plays for its
 * files). The controller (core.ts) implements both; registers, the fetch
 * loop, completion posting and the queue arrays stay out of a handler's
 * reach, so a command can change controller state only through these.
 */
import type { LogLimiter, Logger } from 'vfio-user-ts';
import type { BufferBudget } from './buffer-budget.js';
import type { FeatureState } from './features.js';
import type { NvmeDma } from './host.js';
import type { ControllerIdentity, HealthCounters } from './identify.js';
import type { Namespace } from './namespace.js';
import type { CompletionQueue, SubmissionQueue } from './queues.js';

/** What NVM command set (I/O) commands need. */
export interface IoContext {
  /**
   * Guest memory (PRPs, data), for the commands of the controller's current
   * life: a controller reset revokes it (every access then fails) and puts
   * a new one here. A command takes it once, when it starts, and uses that
   * one throughout, so that one the reset did not wait for cannot touch
   * guest memory after the reset.
   */
  readonly dma: NvmeDma;
  readonly log: Logger;
  /** Log lines the guest can cause (failed commands, bad fields): rate-limited per kind. */
  readonly limiter: LogLimiter;
  /** Host memory for bounce buffers (take before allocating one, release after). */
  readonly buffers: BufferBudget;
  /** Namespaces by nsid (1, 2, ...). */
  readonly namespaces: ReadonlyMap<number, Namespace>;
  /**
   * The current features. A controller reset replaces the object: read it
   * here again after an await rather than keeping it.
   */
  readonly features: Readonly<FeatureState>;
  /** SMART / Health counters (commands count their blocks). */
  readonly health: HealthCounters;
  /** Make every namespace's completed writes durable. */
  flushAll(): Promise<void>;
}

/** Creating, finding and deleting queues (queue-table.ts). */
export interface QueueAdmin {
  sq(qid: number): SubmissionQueue | undefined;
  cq(qid: number): CompletionQueue | undefined;
  createCq(qid: number, base: bigint, size: number, iv: number, ien: boolean): CompletionQueue;
  createSq(qid: number, base: bigint, size: number, cq: CompletionQueue): SubmissionQueue;
  /** Delete an I/O SQ: it goes at once; resolves once its commands still running are done (queue-table.ts). */
  deleteSq(sq: SubmissionQueue): Promise<void>;
  deleteCq(cq: CompletionQueue): void;
  /** An I/O queue was created since the last reset. */
  readonly ioQueuesCreated: boolean;
}

/** Outstanding Async Event Requests (async-events.ts). */
export interface AsyncEventRequests {
  /** Hold an AER of `sq` until an event comes; false when MAX_AERS are outstanding already. */
  request(sq: SubmissionQueue, cid: number): boolean;
  /** Get Log Page of `lid` with RAE clear: the events it reports are unmasked. */
  logPageRead(lid: number): void;
}

/** What admin commands need: everything I/O commands do, and the controller's settings, queues and events. */
export interface AdminContext extends IoContext {
  /** Settable, unlike an I/O command's read-only view. */
  readonly features: FeatureState;
  readonly identity: ControllerIdentity;
  /** Most I/O queue pairs offered (Set Features Number of Queues is clamped to this). */
  readonly maxIoQueues: number;
  /** MSI-X vectors the device has (a CQ's IV must be below this). */
  readonly vectors: number;
  /** Whether MSI-X is on (without it, every CQ must use vector 0). */
  msixEnabled(): boolean;
  readonly queues: QueueAdmin;
  readonly asyncEvents: AsyncEventRequests;
  /**
   * Doorbell Buffer Config: shadow doorbells at `dbs`, EventIdx at `eis`.
   * False when either page is not page-aligned fd-backed guest memory, or
   * both are the same page.
   */
  configureDoorbellBuffer(dbs: bigint, eis: bigint): boolean;
}
