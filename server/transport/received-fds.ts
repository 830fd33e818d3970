/**
 * Bookkeeping of the fds that arrive with messages, so that none leaks: a
 * channel records every received fd in its HeldFds; each message's fds reach
 * the handler as a ReceivedFds, which hands them over (take) or closes them
 * (release) through that same HeldFds. Whatever is still held when the
 * channel closes is closed with it.
 */
import type { LogLimiter } from '../log-limiter.js';

/** The received fds a channel holds: neither handed over to a handler nor closed yet. */
export class HeldFds {
  readonly #held = new Set<number>();
  readonly #closeFd: (fd: number) => void;
  readonly #limiter: LogLimiter;

  /** `closeFd`: the native addon's closeFd. The client chooses the fds, so what they make us log is rate-limited. */
  constructor(closeFd: (fd: number) => void, limiter: LogLimiter) {
    this.#closeFd = closeFd;
    this.#limiter = limiter;
  }

  get size(): number {
    return this.#held.size;
  }

  add(fds: readonly number[]): void {
    for (let i = 0; i < fds.length; i++) this.#held.add(fds[i]!);
  }

  /** Ownership of these fds left (a handler took them): no longer ours to close. */
  handOver(fds: readonly number[]): void {
    for (const fd of fds) this.#held.delete(fd);
  }

  /** Close a held fd nobody took (no-op if it is not held). */
  close(fd: number, reason: string): void {
    if (!this.#held.delete(fd)) return;
    this.#limiter.log.debug({ fd, reason }, 'closing received fd');
    this.#closeQuietly(fd);
  }

  /** Close every fd still held. */
  closeAll(): void {
    for (const fd of this.#held) this.#closeQuietly(fd);
    this.#held.clear();
  }

  #closeQuietly(fd: number): void {
    try {
      this.#closeFd(fd);
    } catch (err) {
      // close(2) can fail on some files (EIO on a network file system): the client picks the file.
      this.#limiter.warn('received-fd-close-failed', { err, fd }, 'close of a received fd failed');
    }
  }
}

/** The fds that came with one message. Handlers `take` what they keep; the rest is closed by `release`. */
export class ReceivedFds {
  #fds: number[];
  readonly #held: HeldFds;

  /** `fds` must already be recorded in `held`. */
  constructor(held: HeldFds, fds: number[]) {
    this.#held = held;
    this.#fds = fds;
  }

  /** How many fds are still held (not taken, not released). */
  get count(): number {
    return this.#fds.length;
  }

  /** Take ownership of every remaining fd (the caller must close them). */
  takeAll(): number[] {
    const out = this.#fds;
    this.#fds = [];
    this.#held.handOver(out);
    return out;
  }

  /** Take the first remaining fd, or undefined. */
  takeOne(): number | undefined {
    const fd = this.#fds.shift();
    if (fd !== undefined) this.#held.handOver([fd]);
    return fd;
  }

  /** Close every fd not taken. Returns how many were closed. Idempotent. */
  release(reason = 'unexpected'): number {
    const rest = this.#fds;
    this.#fds = [];
    for (const fd of rest) this.#held.close(fd, reason);
    return rest.length;
  }
}
