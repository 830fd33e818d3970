/**
 * Open-fd accounting for leak checks: every test that touches sockets, memfds
 * or eventfds records a baseline and asserts the process is back to it.
 */
import { readdirSync, readlinkSync } from 'node:fs';

/** The fds this process has open now (numbers, sorted), from /proc/self/fd. */
export function listOpenFds(): number[] {
  // readdirSync opens (and closes) one fd for the directory itself; it shows
  // in its own listing, so drop any entry that no longer resolves.
  const fds: number[] = [];
  for (const name of readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    try {
      readlinkSync(`/proc/self/fd/${name}`);
      fds.push(fd);
    } catch {
      // the directory fd, already closed
    }
  }
  return fds.sort((a, b) => a - b);
}

/** `fd -> link target` for the given fds (for readable leak reports). */
export function describeFds(fds: readonly number[]): string {
  return fds
    .map((fd) => {
      try {
        return `${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`;
      } catch {
        return `${fd} -> (closed)`;
      }
    })
    .join(', ');
}

/** A snapshot of the open fds, to compare against later. */
export interface FdBaseline {
  readonly fds: ReadonlySet<number>;
  /** fds open now that were not open at the snapshot. */
  leaked(): number[];
  /**
   * Resolve once the open fds are exactly those of the snapshot (closing is
   * often asynchronous: a peer's hang-up is seen on the next loop turn).
   * Rejects with a list of the leaked fds after `timeoutMs`.
   */
  settle(timeoutMs?: number): Promise<void>;
}

/** Take a snapshot of the open fds. */
export function fdBaseline(): FdBaseline {
  const fds = new Set(listOpenFds());
  const leaked = () => listOpenFds().filter((fd) => !fds.has(fd));
  const missing = () => [...fds].filter((fd) => !listOpenFds().includes(fd));
  return {
    fds,
    leaked,
    async settle(timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const extra = leaked();
        if (extra.length === 0) return;
        if (Date.now() > deadline) {
          const gone = missing();
          throw new Error(
            `fd leak: ${extra.length} fd(s) still open: ${describeFds(extra)}` +
              (gone.length ? `; and closed since baseline: ${gone.join(', ')}` : ''),
          );
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
}
