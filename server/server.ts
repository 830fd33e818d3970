/**
 * DeviceServer: hosts one Endpoint on one UNIX socket path, one client at a time.
 *
 * A second client that connects while one is attached is turned away: after a
 * short grace period (`busyGraceMs`, default 100 ms) its VERSION is answered
 * with an EBUSY error reply and its socket closed ('rejected' event, a
 * rate-limited warning), so a second QEMU pointed at a busy device fails its
 * realize at once ("version reply: Device or resource busy") instead of
 * waiting for a reply until its x-msg-timeout. The grace period covers a
 * client that disconnects and reconnects at once: its new connection is often
 * accepted before the old one's EOF is seen. A client that arrives while the
 * previous one is being detached waits (at most `maxWaiting`, default 4) and
 * is served as soon as the detach completes.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { native } from '../native/index.js';
import { Errno } from '../protocol/constants.js';
import type { Endpoint } from './endpoint.js';
import { defaultLogger } from './log.js';
import { LogLimiter } from './log-limiter.js';
import { combineObservers, Connection, turnAway, type ConnectionOptions } from './connection/index.js';
import { EndpointMetrics, type MetricsRegistry } from './metrics/index.js';
import { Listener } from './transport/index.js';
import {
  replaceDevice,
  type NextDevice,
  type ReplaceDeviceOptions,
  type ReplaceDeviceResult,
} from './replace-device.js';

export interface ServeOptions extends ConnectionOptions {
  socketPath: string;
  /**
   * An already listening socket to accept on instead of binding `socketPath`
   * (socket activation: systemd made it and owns its file, which is then
   * never removed). The server takes ownership of the fd.
   */
  listenFd?: number;
  /** Count this device's messages, errors, interrupts, DMA and connections (server/metrics). */
  metrics?: MetricsRegistry;
  /** Parent logger (a child { device } is made); default: createLogger()'s shared default (LOG_LEVEL, else warn, to stderr). */
  log?: Logger | undefined;
  /** listen(2) backlog (default 16). */
  backlog?: number;
  /** Clients kept waiting for the previous one's detach (default 4); more are closed at once. */
  maxWaiting?: number;
  /** How long a client arriving while another is attached waits for that one to go before it is closed (default 100 ms). */
  busyGraceMs?: number;
}

/** The events of a DeviceServer, with their arguments. */
export interface DeviceServerEvents {
  /** A client was accepted (its VERSION is still to come). */
  connect: [connection: Connection];
  /** A client is gone and the endpoint detached. */
  disconnect: [connection: Connection, reason: string];
  /** A client was turned away (EBUSY): another one is attached, or too many wait. */
  rejected: [reason: string];
}

/** Events: see DeviceServerEvents (`server.on('disconnect', (conn, reason) => ...)` is typed). */
export class DeviceServer extends EventEmitter<DeviceServerEvents> {
  #endpoint: Endpoint;
  /** The replacement in progress (they run one at a time). */
  #replacing: Promise<unknown> = Promise.resolve();
  /** A replacement is swapping the device: a client arriving with nobody attached waits for the new one. */
  #swapping = false;
  readonly options: ServeOptions;
  readonly log: Logger;
  #listener: Listener | undefined;
  #connection: Connection | undefined;
  /** Accepted clients waiting for the current one to go (oldest first); `timer` while it is still attached. */
  #waiting: { fd: number; timer: NodeJS.Timeout | undefined }[] = [];
  #closing = false;
  /**
   * One rate limit for everything clients make this device's server log, its
   * connections included (a client that reconnects in a loop gets no fresh
   * budget); `options.logLimiter` if given.
   */
  readonly #limiter: LogLimiter;
  readonly #metrics: EndpointMetrics | undefined;
  readonly #connectionOptions: ConnectionOptions;

  constructor(endpoint: Endpoint, options: ServeOptions) {
    super();
    this.#endpoint = endpoint;
    this.options = options;
    this.log = (options.log ?? defaultLogger()).child({ device: endpoint.name });
    this.#limiter = options.logLimiter ?? new LogLimiter(this.log);
    this.#metrics = options.metrics ? new EndpointMetrics(options.metrics, endpoint) : undefined;
    const observer = combineObservers(options.observer, this.#metrics?.observer);
    this.#connectionOptions = { ...options, logLimiter: this.#limiter, ...(observer ? { observer } : {}) };
  }

  /** The device served (replaceDevice changes it). */
  get endpoint(): Endpoint {
    return this.#endpoint;
  }

  /**
   * Replace the device with `next` (or what `next()` makes) under the
   * attached client, if any, without it noticing: the old device is
   * quiesced and saved, the new one loads that state and takes over the
   * client's DMA mappings, interrupt eventfds and mmapped BAR memory, and
   * resumes; the old one is closed. Requests arriving meanwhile wait and are
   * answered once, by the new device. Both must be PciDevices with the same
   * BAR layout and interrupt vectors. On failure (state refused, a factory
   * that throws, ...) the old device runs on, resumed, and the promise
   * rejects with a ReplaceDeviceError naming the stage. Replacements run one
   * at a time. See server/replace-device.ts.
   */
  replaceDevice(next: NextDevice, options?: ReplaceDeviceOptions): Promise<ReplaceDeviceResult> {
    const run = async (): Promise<ReplaceDeviceResult> => {
      this.#swapping = true;
      try {
        const result = await replaceDevice(this.#endpoint, next, this.#connection, this.log, options);
        this.#endpoint = result.device;
        return result;
      } finally {
        this.#swapping = false;
        // A client that arrived during a swap with nobody attached waited for it.
        if (!this.#connection) this.#startNextWaiting();
      }
    };
    const done = this.#replacing.then(run, run);
    this.#replacing = done.catch(() => undefined);
    return done;
  }

  get socketPath(): string {
    return this.options.socketPath;
  }

  /** The attached client's connection, if any. */
  get connection(): Connection | undefined {
    return this.#connection;
  }

  get listening(): boolean {
    return this.#listener?.listening ?? false;
  }

  /** Bind the socket path (replacing a stale socket file; EADDRINUSE if a live server owns it) and start accepting. */
  async listen(): Promise<void> {
    if (this.#listener) return;
    this.#closing = false;
    const onAccept = (fd: number): void => this.#onAccept(fd);
    const { listenFd } = this.options;
    this.#listener =
      listenFd === undefined
        ? await Listener.open(this.options.socketPath, onAccept, this.log, {
            backlog: this.options.backlog ?? 16,
            logLimiter: this.#limiter,
          })
        : Listener.adopt(listenFd, this.options.socketPath, onAccept, this.log, { logLimiter: this.#limiter });
  }

  #onAccept(fd: number): void {
    if (this.#closing) {
      native.closeFd(fd);
      return;
    }
    if (!this.#connection && !this.#swapping) {
      this.#start(fd);
      return;
    }
    if (this.#waiting.length >= (this.options.maxWaiting ?? 4)) {
      this.#reject(fd, 'too many clients waiting');
      return;
    }
    const entry: { fd: number; timer: NodeJS.Timeout | undefined } = { fd, timer: undefined };
    if (this.#active()) {
      // Give an attached client's pending EOF a moment to show up.
      // (Decided in setImmediate: after this loop iteration's poll phase, so an
      // EOF already in the kernel is seen even if the loop was busy for longer.)
      entry.timer = setTimeout(
        () =>
          setImmediate(() => {
            entry.timer = undefined;
            if (!this.#active()) return; // it is going: keep waiting for its detach
            const i = this.#waiting.indexOf(entry);
            if (i < 0) return;
            this.#waiting.splice(i, 1);
            this.#reject(fd, 'a client is already attached');
          }),
        this.options.busyGraceMs ?? 100,
      );
    }
    this.#waiting.push(entry);
  }

  /** A client is attached and not on its way out. */
  #active(): boolean {
    const state = this.#connection?.state;
    return state === 'version' || state === 'ready';
  }

  #reject(fd: number, why: string): void {
    this.#limiter.warn('client-rejected', { why }, 'turning a new client away (EBUSY)');
    turnAway(fd, Errno.EBUSY, this.log);
    this.#metrics?.rejected();
    this.emit('rejected', why);
  }

  #start(fd: number): void {
    let conn: Connection;
    try {
      conn = new Connection(fd, this.#endpoint, this.log, this.#connectionOptions, (c, reason) =>
        this.#onClosed(c, reason),
      );
    } catch (err) {
      this.#limiter.error('connection-failed', { err }, 'cannot serve the new connection');
      try {
        native.closeFd(fd);
      } catch {
        // The channel took it already.
      }
      this.#startNextWaiting();
      return;
    }
    this.#connection = conn;
    this.emit('connect', conn);
  }

  #onClosed(conn: Connection, reason: string): void {
    if (this.#connection === conn) this.#connection = undefined;
    this.emit('disconnect', conn, reason);
    this.#startNextWaiting();
  }

  #startNextWaiting(): void {
    const next = this.#waiting.shift();
    if (next === undefined) return;
    clearTimeout(next.timer);
    if (this.#closing) native.closeFd(next.fd);
    else this.#start(next.fd);
  }

  // ---- live upgrade (cli/takeover): the listening socket moves to another process ----

  /** Stop accepting (clients connecting meanwhile wait in the backlog); resumeAccepting() undoes it. */
  pauseAccepting(): void {
    this.#listener?.pause();
  }

  resumeAccepting(): void {
    this.#listener?.resume();
  }

  /** A copy of the listening socket's fd (the caller owns it), to send to the process taking over. */
  duplicateListenFd(): number {
    if (!this.#listener) throw new Error(`${this.socketPath}: not listening`);
    return this.#listener.duplicate();
  }

  /** An adopted socket is ours from now on: close() removes its file (the process we took it from let go). */
  claimSocketPath(): void {
    this.#listener?.claimPath();
  }

  /**
   * Let another process serve the socket: close our copy of it without
   * removing the socket file, then close() as usual (it must have no client).
   */
  async releaseSocket(): Promise<void> {
    this.#listener?.release();
    this.#listener = undefined;
    await this.close();
  }

  /** Stop listening, drop the client (its endpoint is detached), remove the socket file. */
  async close(): Promise<void> {
    this.#closing = true;
    this.#listener?.close();
    this.#listener = undefined;
    for (const w of this.#waiting.splice(0)) {
      clearTimeout(w.timer);
      native.closeFd(w.fd);
    }
    const conn = this.#connection;
    if (conn) await conn.close('server closing');
    this.#limiter.flush();
  }
}

/** Create a DeviceServer for `endpoint` and start listening on `options.socketPath`. */
export async function serve(endpoint: Endpoint, options: ServeOptions): Promise<DeviceServer> {
  const server = new DeviceServer(endpoint, options);
  await server.listen();
  return server;
}
