/**
 * Listening on a UNIX socket path. A stale socket file (left by a crashed
 * process: nobody answers on it) is replaced; a path a live server answers on
 * is never stolen (EADDRINUSE with a clear message); a path that exists and is
 * not a socket is never deleted.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
import type { Logger } from 'pino';
import { native, type Watcher } from '../../native/index.js';
import { LogLimiter } from '../log-limiter.js';

/** An Error with a `.code` (EADDRINUSE, ENOTSOCK, ...). */
class ListenError extends Error {
  constructor(
    public readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ListenError';
  }
}

/** 'live': a server answered; 'stale': a socket file nobody listens on; 'absent'; 'not-socket'. */
type SocketPathState = 'live' | 'stale' | 'absent' | 'not-socket';

/** Probe `path` without blocking: connect with node:net and see what happens. */
async function probeSocketPath(path: string): Promise<SocketPathState> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
  if (!st.isSocket()) return 'not-socket';
  return new Promise<SocketPathState>((resolve) => {
    const sock = createConnection({ path });
    sock.once('connect', () => {
      sock.destroy();
      resolve('live');
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      sock.destroy();
      // ECONNREFUSED: nobody listens. EAGAIN: a live listener with a full backlog.
      resolve(err.code === 'EAGAIN' ? 'live' : 'stale');
    });
  });
}

export interface ListenerOptions {
  backlog?: number;
  /** Rate limit for accept errors (a flood of clients can exhaust fds: EMFILE is retried every 100 ms). */
  logLimiter?: LogLimiter;
}

/** A listening socket handing every accepted client fd to `onAccept` (which owns it). */
export class Listener {
  readonly path: string;
  readonly #log: Logger;
  #fd: number;
  #watcher: Watcher | undefined;
  /** The socket file is someone else's (socket activation, a takeover not yet complete): never removed. */
  #adopted: boolean;
  /** What accepted clients go to (kept for resume()). */
  #onAccept: ((fd: number) => void) | undefined;
  readonly #limiter: LogLimiter;

  private constructor(path: string, fd: number, log: Logger, adopted: boolean, limiter: LogLimiter) {
    this.#limiter = limiter;
    this.path = path;
    this.#fd = fd;
    this.#log = log;
    this.#adopted = adopted;
  }

  #watch(onAccept: (fd: number) => void): void {
    this.#onAccept = onAccept;
    this.#watcher = native.watchListener(
      this.#fd,
      (clientFd) => {
        if (this.#fd < 0) {
          native.closeFd(clientFd);
          return;
        }
        onAccept(clientFd);
      },
      (reason) => this.#limiter.error('accept-failed', { reason, path: this.path }, 'listener error'),
    );
  }

  /**
   * Accept on a socket that is already listening (socket activation: systemd
   * bound `path` and passed the fd). Takes ownership of `fd` (made CLOEXEC and
   * non-blocking); close() closes it but leaves the socket file alone.
   */
  static adopt(
    fd: number,
    path: string,
    onAccept: (fd: number) => void,
    log: Logger,
    options: Pick<ListenerOptions, 'logLimiter'> = {},
  ): Listener {
    // A CLOEXEC copy: inherited fds are not, and a child the device spawns must not hold our socket.
    const own = native.dupFd(fd);
    native.closeFd(fd);
    const listener = new Listener(path, own, log, true, options.logLimiter ?? new LogLimiter(log));
    try {
      listener.#watch(onAccept);
    } catch (err) {
      native.closeFd(own);
      throw err;
    }
    log.info({ path, fd }, 'listening (socket passed by the service manager)');
    return listener;
  }

  /** Bind and listen on `path` (replacing a stale socket file), then start accepting. */
  static async open(
    path: string,
    onAccept: (fd: number) => void,
    log: Logger,
    options: ListenerOptions = {},
  ): Promise<Listener> {
    const state = await probeSocketPath(path);
    if (state === 'live') throw new ListenError('EADDRINUSE', `${path}: another server is listening on this socket`);
    if (state === 'not-socket')
      throw new ListenError('EEXIST', `${path}: exists and is not a socket; refusing to replace it`);
    if (state === 'stale') {
      log.info({ path }, 'replacing stale socket file');
      try {
        unlinkSync(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    const fd = native.listenUnix(path, options.backlog ?? 16);
    const listener = new Listener(path, fd, log, false, options.logLimiter ?? new LogLimiter(log));
    try {
      listener.#watch(onAccept);
    } catch (err) {
      native.closeFd(fd);
      throw err;
    }
    log.info({ path }, 'listening');
    return listener;
  }

  get listening(): boolean {
    return this.#fd >= 0;
  }

  /**
   * Stop accepting without closing the socket (a live upgrade hands it to
   * another process): clients that connect meanwhile wait in the backlog.
   */
  pause(): void {
    this.#watcher?.close();
    this.#watcher = undefined;
  }

  /** Accept again after pause(). */
  resume(): void {
    if (this.#fd < 0 || this.#watcher || !this.#onAccept) return;
    this.#watch(this.#onAccept);
  }

  /** A CLOEXEC copy of the listening socket (the caller owns it): what a live upgrade sends. */
  duplicate(): number {
    if (this.#fd < 0) throw new Error(`${this.path}: the listener is closed`);
    return native.dupFd(this.#fd);
  }

  /**
   * The socket file is ours from now on (an adopted socket whose previous
   * owner, the process a takeover replaced, let go of it): close() removes it.
   */
  claimPath(): void {
    this.#adopted = false;
  }

  /**
   * Stop accepting and close our copy of the socket, leaving the socket file
   * alone (another process serves it now). Idempotent.
   */
  release(): void {
    this.#adopted = true;
    this.close();
  }

  /** Stop accepting, close the socket and remove the socket file (if it is still ours). Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    this.#watcher?.close();
    this.#watcher = undefined;
    try {
      native.closeFd(this.#fd);
    } catch (err) {
      this.#log.warn({ err }, 'closing the listening socket failed');
    }
    this.#fd = -1;
    if (!this.#adopted) {
      try {
        if (lstatSync(this.path).isSocket()) unlinkSync(this.path);
      } catch {
        // Already gone.
      }
    }
    this.#log.info({ path: this.path }, 'stopped listening');
  }
}
