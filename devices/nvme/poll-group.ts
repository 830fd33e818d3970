/**
 * One polling loop per process: every controller that watches shadow
 * doorbells (sq-poller.ts) joins this group, and one slice of the event loop
 * polls all of them, then the loop gets a turn (setImmediate) before the
 * next slice. Separate loops would take turns instead, each making the
 * others' submissions wait for its whole slice; SPDK groups its pollers the
 * same way (one poll group per thread).
 */

/** A controller's poller, as the group drives it. */
export interface PollGroupMember {
  /** The longest slice this member wants, in microseconds. */
  readonly sliceMicros: number;
  /** Before a slice: false when there is nothing (left) to watch; the member leaves the group. */
  begin(): boolean;
  /** One look at every watched queue: true when a submission was found (and started). */
  poll(): boolean;
  /** After a slice that took `spentMs`: re-arm what has waited long enough; false when nothing is left to watch. */
  end(now: number, spentMs: number): boolean;
  /** The member's shadow pages are not mapped right now (look again later without spinning). */
  unmapped(): boolean;
}

class PollGroup {
  private readonly members = new Set<PollGroupMember>();
  private running = false;

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
    let now: number;
    let found = false;
    do {
      for (let i = 0; i < members.length; i++) if (members[i]!.poll()) found = true;
      now = performance.now();
      // Found work: end the slice so the completion's interrupt (a microtask) goes out now.
    } while (!found && now - start < limit);
    let allUnmapped = true;
    for (const m of members) {
      if (!m.end(now, now - start)) this.members.delete(m);
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
