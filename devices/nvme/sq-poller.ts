/**
 * Adaptive polling of shadow SQ tail doorbells (what SPDK's vfio-user NVMe
 * target does all the time, here only in the gaps while I/O flows).
 *
 * With shadow doorbells the driver writes each new SQ tail into a page of
 * guest memory and rings the MMIO doorbell only when the tail passes the
 * EventIdx we publish. Every MMIO doorbell costs a trap in the guest and a
 * vfio-user message to us (a socket wake-up on each side). When the
 * controller falls idle (nothing in flight) we therefore publish a "never
 * ring" EventIdx (tail - 1: the driver's need-event test is then false for
 * any new tail) and watch the shadow tails from the event loop instead. When
 * the watch window ends we re-arm EventIdx = tail (the next submission rings
 * again) and look once more, so no submission is ever missed.
 *
 * The window adapts to the guest: it is twice the recent typical gap
 * between the controller falling idle and the next submission (whether
 * polling found it or a doorbell brought it), at least MIN_WINDOW_MICROS
 * and at most `idleMicros`. A guest that keeps the controller waiting longer
 * than `idleMicros` is not polled at all (its doorbells keep the estimate
 * current, so polling comes back when the gaps shrink).
 *
 * While commands run on the thread pool every SQ is armed (the guest rings)
 * and the event loop sleeps until their completion, which starts a new
 * watch. The watch runs in slices of `sliceMicros`, shared by every
 * controller of the process (poll-group.ts), with a loop turn
 * (setImmediate) between slices, so sockets, timers and thread-pool
 * completions still run: other devices in the process wait at most one
 * slice. The price is CPU: the event loop spins in the gaps (see
 * `stats.spinMicros`). `idleMicros: 0` turns polling off.
 *
 * On a host without a spare core the spinning starves the guest it waits
 * for; the poll group then backs off (poll-backoff.ts): every SQ rings
 * again until the back-off ends (`stats.backedOff` counts the watches it
 * cut short or skipped).
 */
import type { SubmissionQueue } from './queues.js';
import { pollGroup, type PollGroupMember } from './poll-group.js';
import { sqSlot, type ShadowDoorbells } from './shadow-doorbells.js';

export interface SqPollOptions {
  /** The longest watch after the controller falls idle, in microseconds (0: never poll). */
  idleMicros: number;
  /** Longest stretch spent watching before the event loop gets a turn, in microseconds. */
  sliceMicros: number;
  /**
   * Fit the window to the guest's pace and back off on a busy host (default);
   * false: always watch the whole idleMicros, whatever the host's load.
   */
  adaptive?: boolean;
}

/** Watch up to 2 ms after the controller falls idle, in slices of 200 us. */
export const DEFAULT_SQ_POLL: SqPollOptions = { idleMicros: 2000, sliceMicros: 200 };

/** The shortest watch window (also the first one, before any gap was seen). */
const MIN_WINDOW_MICROS = 100;

/** Weight of a new gap in the running estimate (exponentially weighted mean). */
const GAP_WEIGHT = 1 / 8;

/** What the poller needs from the controller. */
export interface SqPollerHost {
  /** The shadow doorbells (undefined: none configured, stop polling). */
  shadow(): ShadowDoorbells | undefined;
  /** Commands in flight (polling pauses while there are any). */
  inflight(): number;
  /** The shadow tail of `sq` moved to `tail`: fetch up to it. */
  moved(sq: SubmissionQueue, tail: number): void;
}

export class SqPoller implements PollGroupMember {
  private readonly queues: SubmissionQueue[] = [];
  /** When the controller last fell idle (performance.now(), ms); -1: not waiting for a submission. */
  private idleSince = -1;
  /** Running estimate of the gap between falling idle and the next submission, in ms. */
  private gapEstimate = 0;
  /**
   * Submissions found by polling; re-arms (back to doorbells); time spent
   * spinning, in microseconds; the current window, in microseconds; watches
   * skipped or cut short because the host was too busy (poll-backoff.ts).
   */
  readonly stats = { found: 0, rearmed: 0, spinMicros: 0, windowMicros: MIN_WINDOW_MICROS, backedOff: 0 };

  constructor(
    private readonly host: SqPollerHost,
    private readonly options: SqPollOptions,
  ) {}

  get enabled(): boolean {
    return this.options.idleMicros > 0;
  }

  /** The watch window now, in ms (0: the guest is too slow to be worth polling). */
  private window(): number {
    const max = this.options.idleMicros / 1000;
    if (this.options.adaptive === false) return max;
    const w = 2 * this.gapEstimate;
    if (w > 2 * max) return 0;
    return Math.min(max, Math.max(MIN_WINDOW_MICROS / 1000, w));
  }

  private observeGap(now: number): void {
    if (this.idleSince < 0) return;
    const gap = now - this.idleSince;
    this.idleSince = -1;
    this.gapEstimate += (gap - this.gapEstimate) * GAP_WEIGHT;
    this.stats.windowMicros = Math.round(this.window() * 1000);
  }

  /**
   * A doorbell message brought a submission. When the controller was idle,
   * the time since it fell idle is a gap sample (the guest was slower than
   * the window, or polling was off for it).
   */
  doorbell(): void {
    if (this.host.inflight() === 0) this.observeGap(performance.now());
  }

  /**
   * The controller is idle and `sq` consumed everything up to `sq.tail`:
   * stop MMIO doorbells for it and watch its shadow tail. Returns the shadow
   * tail when it already moved (the caller fetches on), else undefined.
   */
  watch(db: ShadowDoorbells, sq: SubmissionQueue): number | undefined {
    const slot = sqSlot(sq.id);
    this.idleSince = performance.now();
    const busy = this.backsOff && !pollGroup.allows(this.idleSince);
    if (busy) this.stats.backedOff++;
    if (busy || this.window() === 0) {
      // Re-arming is the caller's default: leave EventIdx = tail.
      db.setEventIdx(slot, sq.tail);
    } else {
      db.setEventIdx(slot, (sq.tail - 1) & 0xffff);
      if (!sq.polled) {
        sq.polled = true;
        this.queues.push(sq);
      }
      pollGroup.join(this);
    }
    const tail = db.read(slot);
    return tail !== undefined && tail !== sq.tail && tail < sq.size ? tail : undefined;
  }

  /** Forget every queue (controller reset): their EventIdx slots go with the shadow pages. */
  clear(): void {
    for (const sq of this.queues.splice(0)) sq.polled = false;
  }

  // ---- PollGroupMember: the process's poll group drives the watch (poll-group.ts)

  get sliceMicros(): number {
    return this.options.sliceMicros;
  }

  get backsOff(): boolean {
    return this.options.adaptive !== false;
  }

  begin(): boolean {
    const db = this.host.shadow();
    const queues = this.queues;
    if (!db) this.clear();
    for (let i = queues.length - 1; i >= 0; i--) {
      if (queues[i]!.deleted) queues.splice(i, 1)[0]!.polled = false;
    }
    if (queues.length > 0 && this.host.inflight() > 0) {
      // Commands went to the thread pool: ring mode until they complete.
      this.rearm(db!);
    }
    return queues.length > 0 && this.host.inflight() === 0;
  }

  poll(): boolean {
    const db = this.host.shadow();
    if (!db) return false;
    const queues = this.queues;
    let found = false;
    for (let i = 0; i < queues.length; i++) {
      const sq = queues[i]!;
      if (sq.fetching) continue;
      const tail = db.read(sqSlot(sq.id));
      if (tail !== undefined && tail !== sq.tail && tail < sq.size) {
        if (!found) this.observeGap(performance.now());
        found = true;
        this.stats.found++;
        this.host.moved(sq, tail);
      }
    }
    return found;
  }

  end(now: number, spentMs: number, backOff: boolean): boolean {
    this.stats.spinMicros += spentMs * 1000;
    const db = this.host.shadow();
    if (db && backOff && this.backsOff && this.queues.length > 0) {
      this.stats.backedOff++;
      this.rearm(db);
    } else if (db && this.idleSince >= 0 && now - this.idleSince > this.window()) this.rearm(db);
    return this.queues.length > 0;
  }

  unmapped(): boolean {
    const db = this.host.shadow();
    return !db || this.queues.length === 0 || db.read(sqSlot(this.queues[0]!.id)) === undefined;
  }

  /** Window over (or commands in flight): ask for MMIO doorbells again, then look once more (a tail written before the guest saw EventIdx). */
  private rearm(db: ShadowDoorbells): void {
    const queues = this.queues.splice(0);
    for (const sq of queues) {
      sq.polled = false;
      if (sq.deleted) continue;
      if (!db.setEventIdx(sqSlot(sq.id), sq.tail)) {
        // The page is not mapped right now: the guest will not ring, so keep watching.
        sq.polled = true;
        this.queues.push(sq);
        continue;
      }
      this.stats.rearmed++;
      const tail = db.read(sqSlot(sq.id));
      if (tail !== undefined && tail !== sq.tail && tail < sq.size && !sq.fetching) this.host.moved(sq, tail);
    }
  }
}
