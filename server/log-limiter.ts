/**
 * Rate-limited logging for what a client or a guest can trigger.
 *
 * Anything on the socket and anything the guest writes to a register can make
 * us log. A hostile peer must not be able to fill a disk with our logs, so
 * every such line goes through a LogLimiter: per kind of event, the first
 * `burst` lines in a window are logged as usual, the rest are counted, and the
 * next line of that kind after the window has passed first logs one summary
 * ("N more suppressed"). With the defaults (5 per kind per minute) a peer that
 * hammers one kind costs about six lines a minute. The set of kinds is fixed by
 * the code (pass constants, never text the peer chose), and all kinds together
 * get at most `maxLines` lines per window (default 10; summaries aside), so a
 * peer that hammers every kind it can reach costs a few KB a minute, not a few
 * lines times every kind.
 *
 * QEMU does the same with guest errors by logging them only when asked
 * (`-d guest_errors`); we keep them visible at warn level, bounded instead.
 */
import type { Logger } from 'pino';

export interface LogLimiterOptions {
  /** Lines of one kind logged per window before suppression starts. Default 5. */
  burst?: number;
  /** Window length in milliseconds. Default 60 000. */
  windowMs?: number;
  /** Lines of all kinds together logged per window (summaries not counted). Default 10. */
  maxLines?: number;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
}

type Level = 'error' | 'warn' | 'info' | 'debug';

interface KindState {
  windowStart: number;
  logged: number;
  suppressed: number;
}

/** One per device or connection: `limiter.warn('invalid-doorbell', { qid }, 'doorbell to an absent queue')`. */
export class LogLimiter {
  readonly #log: Logger;
  readonly #burst: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #maxLines: number;
  readonly #kinds = new Map<string, KindState>();
  /** The window of the all-kinds budget, and the lines logged in it. */
  #linesWindowStart = -Infinity;
  #lines = 0;

  constructor(log: Logger, options: LogLimiterOptions = {}) {
    this.#log = log;
    this.#burst = options.burst ?? 5;
    this.#windowMs = options.windowMs ?? 60_000;
    this.#now = options.now ?? Date.now;
    this.#maxLines = options.maxLines ?? 10;
  }

  /** The logger lines go to. */
  get log(): Logger {
    return this.#log;
  }

  error(kind: string, fields: object, message: string): void {
    this.#emit('error', kind, fields, message);
  }

  warn(kind: string, fields: object, message: string): void {
    this.#emit('warn', kind, fields, message);
  }

  info(kind: string, fields: object, message: string): void {
    this.#emit('info', kind, fields, message);
  }

  /** Debug lines are rate-limited too: a peer can turn a debug log into a flood when debug is on. */
  debug(kind: string, fields: object, message: string): void {
    this.#emit('debug', kind, fields, message);
  }

  /** Lines of `kind` suppressed in the current window (tests, metrics). */
  suppressed(kind: string): number {
    return this.#kinds.get(kind)?.suppressed ?? 0;
  }

  /** Log the summary of every kind with suppressed lines now (e.g. when the connection closes). */
  flush(): void {
    for (const [kind, state] of this.#kinds) this.#summarize(kind, state);
  }

  #emit(level: Level, kind: string, fields: object, message: string): void {
    if (!this.#log.isLevelEnabled(level)) return;
    const now = this.#now();
    let state = this.#kinds.get(kind);
    if (!state) {
      state = { windowStart: now, logged: 0, suppressed: 0 };
      this.#kinds.set(kind, state);
    } else if (now - state.windowStart >= this.#windowMs) {
      this.#summarize(kind, state);
      state.windowStart = now;
      state.logged = 0;
    }
    if (state.logged < this.#burst && this.#takeLine(now)) {
      state.logged++;
      this.#log[level]({ ...fields, kind }, message);
    } else {
      state.suppressed++;
    }
  }

  /** One line of the all-kinds budget, if any is left in this window. */
  #takeLine(now: number): boolean {
    if (now - this.#linesWindowStart >= this.#windowMs) {
      this.#linesWindowStart = now;
      this.#lines = 0;
    }
    if (this.#lines >= this.#maxLines) return false;
    this.#lines++;
    return true;
  }

  #summarize(kind: string, state: KindState): void {
    if (state.suppressed === 0) return;
    this.#log.warn(
      { kind, suppressed: state.suppressed, windowMs: this.#windowMs },
      `${kind}: ${state.suppressed} more suppressed`,
    );
    state.suppressed = 0;
  }
}
