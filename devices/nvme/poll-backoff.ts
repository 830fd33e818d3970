/**
 * Polling backs off on a busy host: the rule is that polling must never make
 * a loaded host worse than no polling.
 *
 * Why it can: the poller spins on the event loop thread while it waits for
 * the guest's next submission, and the guest (QEMU's vCPU thread, its main
 * loop delivering our interrupts) needs a CPU to make that submission. With
 * a spare core that costs nothing; when runnable threads outnumber the cores
 * the spinning takes CPU from the very guest it waits for, and the scheduler
 * takes ours away in turn (measured: 4 KiB reads at QD1 took 24-35 s with
 * polling, 13-15 s without, with two CPU hogs on 2 cores).
 *
 * The signal: inside a polling slice, consecutive clock reads are a
 * microsecond or two apart (one look at a few shadow tails). A step much
 * longer than that, while nothing was found, is time the thread was not
 * running: descheduled (or preempted by the hypervisor). When such steps
 * take more than half of a slice's wall time, the cores are oversubscribed
 * and polling stops: every SQ asks for doorbells again for a back-off
 * period. The period doubles with each trip (up to MAX_BACKOFF_MS) and
 * halves after every CLEAN_SLICES_TO_EASE slices in a row that ran
 * undisturbed. It eases slowly on purpose: on a busy host most slices still
 * run undisturbed (a 0.2 ms slice rarely meets the scheduler's tick), so a
 * quick reset (first tried: back to 10 ms after 20 clean slices) kept
 * polling on for a quarter of the commands and still lost to no polling. A
 * host that quietens gets polling back within about a second; a loaded one
 * pays a few probe slices per back-off of up to a second.
 *
 * Not used: os.loadavg() (a 1-minute average, and it counts our own spinner
 * and the guest's vCPU thread, so it stays high because we poll), and
 * process.cpuUsage() per slice (a getrusage syscall per slice, and it counts
 * every thread of the process, the thread pool included); the clock steps
 * measure exactly the thread that spins, for free.
 *
 * Pure state, no clock of its own: the poll group (poll-group.ts) passes
 * times in, which keeps the rules testable without timing anything.
 */

/** A step between two looks longer than this (ms) while nothing was found: the thread was not running. */
export const DESCHEDULED_STEP_MS = 0.1;

/** Share of a slice's wall time spent descheduled above which polling backs off. */
const DESCHEDULED_SHARE = 0.5;

/** The first back-off, in ms. */
const MIN_BACKOFF_MS = 10;

/** The longest back-off, in ms (a host that quietens gets polling back within this). */
const MAX_BACKOFF_MS = 1000;

/** Undisturbed slices in a row (10 ms of polling at 200 us) after which the back-off halves. */
const CLEAN_SLICES_TO_EASE = 50;

export class PollBackoff {
  /** Polling is off until this time (performance.now() ms). */
  private until = 0;
  /** The last back-off's length in ms (0: none, or eased off completely). */
  private length = 0;
  /** Undisturbed slices since the last trip. */
  private clean = 0;
  /** Times polling backed off, and the current back-off length in ms. */
  readonly stats = { trips: 0, backoffMs: 0 };

  /** May the poller watch shadow tails at `now`? */
  allows(now: number): boolean {
    return now >= this.until;
  }

  /**
   * A polling slice ended at `now` after `wallMs`, of which `descheduledMs`
   * went in steps of at least DESCHEDULED_STEP_MS. Returns true when polling
   * must stop now (the members re-arm their doorbells).
   */
  slice(now: number, wallMs: number, descheduledMs: number): boolean {
    if (descheduledMs <= wallMs * DESCHEDULED_SHARE) {
      if (++this.clean >= CLEAN_SLICES_TO_EASE) {
        this.clean = 0;
        this.length = this.length / 2 < MIN_BACKOFF_MS ? 0 : this.length / 2;
      }
      return false;
    }
    this.clean = 0;
    this.length = this.length === 0 ? MIN_BACKOFF_MS : Math.min(MAX_BACKOFF_MS, this.length * 2);
    this.until = now + this.length;
    this.stats.trips++;
    this.stats.backoffMs = this.length;
    return true;
  }

  /** Forget every trip: polling is allowed again at once (tests). */
  reset(): void {
    this.until = 0;
    this.length = 0;
    this.clean = 0;
  }
}
