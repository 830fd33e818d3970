/**
 * One polling loop per process: every controller that watches shadow
 * doorbells (sq-poller.ts) joins this group, and one slice of the event loop
 * polls all of them, then the loop gets a turn (setImmediate) before the
 * next slice. Separate loops would take turns instead, each making the
 * others' submissions wait for its whole slice; SPDK groups its pollers the
 * same way (one poll group per thread).
 *
 * The group also notices when the host has no CPU to spare (its slices are
 * descheduled) and stops polling for a while (poll-backoff.ts).
 */
import { DESCHEDULED_STEP_MS, PollBackoff } from './poll-backoff.js';

/** A controller's poller, as the group drives it. */
export interface PollGroupMember {
  /** The longest slice this member wants, in microseconds. */
  readonly sliceMicros: number;
  /** The member stops watching while the group backs off (false: it polls whatever the host load). */
  readonly backsOff: boolean;
  /** Before a slice: false when there is nothing (left) to watch; the member leaves the group. */
  begin(): boolean;
  /** One look at every watched queue: true when a submission was found (and started). */
  poll(): boolean;
  /**
   * After a slice that took `spentMs`: re-arm what has waited long enough
   * (everything when `backOff`: the host is busy, see poll-backoff.ts); false
   * when nothing is left to watch.
   */
  end(now: number, spentMs: number, backOff: boolean): boolean;
  /** The member's shadow pages are not mapped right now (look again later without spinning). */
  unmapped(): boolean;
}

class PollGroup {
  private readonly members = new Set<PollGroupMember>();
  private running = false;
  /** Stops polling while the host is too busy for it to pay (shared: the CPU is the process's). */
  readonly backoff = new PollBackoff();

  /** May a member start watching at `now` (not backing off)? */
  allows(now: number): boolean {
    return this.backoff.allows(now);
  }

  /** Start polling `member` (idempotent); the group runs while it has members. */
  join(member: PollGroupMember): void {
    this.members.add(member);
    if (!this.running) {
      this.running = true;
      setImmediate(this.tick);
    }
  }

  /** Members polled now. */
  get size(): number {
    return this.members.size;
  }

  private readonly tick = (): void => {
    let slice = Number.POSITIVE_INFINITY;
    for (const m of this.members) {
      if (!m.begin()) this.members.delete(m);
      else if (m.sliceMicros < slice) slice = m.sliceMicros;
    }
    if (this.members.size === 0) {
      this.running = false;
      return;
    }
    const members = [...this.members];
    const start = performance.now();
    const limit = slice / 1000;
    let now = start;
    // Backing off: no spinning, unless a member polls whatever the load (a fixed window).
    if (this.backoff.allows(start) || members.some((m) => !m.backsOff)) {
      let before = start;
      let descheduled = 0;
      let found = false;
      do {
        for (let i = 0; i < members.length; i++) if (members[i]!.poll()) found = true;
        now = performance.now();
        // A long step with nothing found is time this thread did not run (a step that found
        // work includes the command itself, so it does not count).
        if (!found && now - before >= DESCHEDULED_STEP_MS) descheduled += now - before;
        before = now;
        // Found work: end the slice so the completion's interrupt (a microtask) goes out now.
      } while (!found && now - start < limit);
      this.backoff.slice(now, now - start, descheduled);
    }
    // Backing off (this slice tripped it, or it began during one): the members ring again.
    const backOff = !this.backoff.allows(now);
    let allUnmapped = true;
    for (const m of members) {
      if (!m.end(now, now - start, backOff)) this.members.delete(m);
      else if (!m.unmapped()) allUnmapped = false;
    }
    if (this.members.size === 0) this.running = false;
    else if (allUnmapped)
      setTimeout(this.tick, 1); // memory being remapped: look again soon, without spinning
    else setImmediate(this.tick);
  };
}

/** The process's poll group. */
export const pollGroup = new PollGroup();
