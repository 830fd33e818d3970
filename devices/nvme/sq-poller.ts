/**
 * Adaptive polling of shadow SQ tail doorbells (what SPDK's vfio-user NVMe
 * target does all the time, here only while I/O flows).
 *
 * With shadow doorbells the driver writes each new SQ tail into a page of
 * guest memory and rings the MMIO doorbell only when the tail passes the
 * EventIdx we publish. Every MMIO doorbell costs a trap in the guest and a
 * vfio-user message to us (a socket wake-up on each side). After serving a
 * submission we therefore publish a "never ring" EventIdx (tail - 1: the
 * driver's need-event test is then false for any new tail) and watch the
 * shadow tail from the event loop instead, for `idleMicros` after the last
 * submission; then we re-arm EventIdx = tail (the next submission rings
 * again) and look once more, so no submission is ever missed.
 *
 * Polling only covers the gaps where the controller is idle, waiting for
 * the guest (no command in flight): that is where a submission's latency
 * is the doorbell's. While commands run on the thread pool every SQ is armed
 * (the guest rings) and the event loop sleeps until their completion, which
 * starts a new watch.
 *
 * The watch runs in slices of `sliceMicros` on the event loop, with a loop
 * turn (setImmediate) between slices, so sockets, timers and thread-pool
 * completions still run: other devices in the process wait at most one
 * slice. The price is CPU: during a stream of I/O the event loop spins in
 * the gaps; when I/O stops it is idle again after `idleMicros`.
 * `idleMicros: 0` turns polling off (every submission rings).
 */
import type { SubmissionQueue } from './queues.js';
import { sqSlot, type ShadowDoorbells } from './shadow-doorbells.js';

export interface SqPollOptions {
  /** Keep watching this long after the last submission, in microseconds (0: never poll). */
  idleMicros: number;
  /** Longest stretch spent watching before the event loop gets a turn, in microseconds. */
  sliceMicros: number;
}

/** Watch 500 us after the last submission, in slices of 200 us. */
export const DEFAULT_SQ_POLL: SqPollOptions = { idleMicros: 500, sliceMicros: 200 };

/** What the poller needs from the controller. */
export interface SqPollerHost {
  /** The shadow doorbells (undefined: none configured, stop polling). */
  shadow(): ShadowDoorbells | undefined;
  /** Commands in flight (polling pauses while there are any). */
  inflight(): number;
  /** The shadow tail of `sq` moved to `tail`: fetch up to it. */
  moved(sq: SubmissionQueue, tail: number): void;
}

export class SqPoller {
  private readonly queues: SubmissionQueue[] = [];
  private last = 0;
  private running = false;
  /** Submissions found by polling, and re-arms (back to MMIO doorbells after idleMicros). */
  readonly stats = { found: 0, rearmed: 0 };

  constructor(private readonly host: SqPollerHost, private readonly options: SqPollOptions) {}

  get enabled(): boolean {
    return this.options.idleMicros > 0;
  }

  /**
   * A fetch round on `sq` consumed everything up to `sq.tail`: stop MMIO
   * doorbells for it and watch its shadow tail. Returns the shadow tail when
   * it already moved (the caller fetches on), else undefined.
   */
  watch(db: ShadowDoorbells, sq: SubmissionQueue): number | undefined {
    const slot = sqSlot(sq.id);
    db.setEventIdx(slot, (sq.tail - 1) & 0xffff);
    this.last = performance.now();
    if (!sq.polled) {
      sq.polled = true;
      this.queues.push(sq);
    }
    if (!this.running) {
      this.running = true;
      setImmediate(this.tick);
    }
    const tail = db.read(slot);
    return tail !== undefined && tail !== sq.tail && tail < sq.size ? tail : undefined;
  }

  /** Forget every queue (controller reset): their EventIdx slots go with the shadow pages. */
  clear(): void {
    for (const sq of this.queues.splice(0)) sq.polled = false;
  }

  private readonly tick = (): void => {
    const db = this.host.shadow();
    const queues = this.queues;
    if (!db) this.clear();
    for (let i = queues.length - 1; i >= 0; i--) {
      if (queues[i]!.deleted) queues.splice(i, 1)[0]!.polled = false;
    }
    if (queues.length === 0) {
      this.running = false;
      return;
    }
    if (this.host.inflight() > 0) {
      // Commands went to the thread pool: ring mode until they complete.
      this.rearm(db!);
      this.running = false;
      return;
    }
    const start = performance.now();
    const slice = this.options.sliceMicros / 1000;
    let now = start;
    let found = false;
    do {
      for (let i = 0; i < queues.length; i++) {
        const sq = queues[i]!;
        if (sq.fetching) continue;
        const tail = db!.read(sqSlot(sq.id));
        if (tail !== undefined && tail !== sq.tail && tail < sq.size) {
          found = true;
          this.stats.found++;
          this.host.moved(sq, tail);
        }
      }
      now = performance.now();
      // Found work: end the slice so the completion's interrupt (a microtask) goes out now.
    } while (!found && now - start < slice);
    if (!found && now - this.last > this.options.idleMicros / 1000) this.rearm(db!);
    if (queues.length === 0) this.running = false;
    else if (this.unmapped(db!)) setTimeout(this.tick, 1); // memory being remapped: look again soon, without spinning
    else setImmediate(this.tick);
  };

  /** The shadow page is not mapped right now. */
  private unmapped(db: ShadowDoorbells): boolean {
    return db.read(sqSlot(this.queues[0]!.id)) === undefined;
  }

  /** Idle long enough (or busy): ask for MMIO doorbells again, then look once more (a tail written before the guest saw EventIdx). */
  private rearm(db: ShadowDoorbells): void {
    const queues = this.queues.splice(0);
    for (const sq of queues) {
      sq.polled = false;
      if (sq.deleted) continue;
      this.stats.rearmed++;
      if (!db.setEventIdx(sqSlot(sq.id), sq.tail)) {
        // The page is not mapped right now: the guest will not ring, so keep watching.
        sq.polled = true;
        this.queues.push(sq);
        continue;
      }
      const tail = db.read(sqSlot(sq.id));
      if (tail !== undefined && tail !== sq.tail && tail < sq.size && !sq.fetching) this.host.moved(sq, tail);
    }
  }
}
