/**
 * DeviceServer: hosts one Endpoint on one UNIX socket path, one client at a time.
 *
 * A client that connects while another is attached waits: its socket is
 * accepted but not read until the current client is gone and detached (like
 * libvfio-user, which leaves it in the listen backlog). This matters because a
 * client that disconnects and reconnects at once is often accepted before its
 * old connection's EOF is seen. At most `maxWaiting` (default 4) clients wait;
 * more are accepted and closed at once with a warning ('rejected' event).
 * QEMU never connects twice to one device; a second QEMU pointed at a busy
 * socket waits for its VERSION reply until its x-msg-timeout.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { NativeBinding } from '../native/index.js';
import type { Endpoint } from './endpoint.js';
import { silentLogger } from './log.js';
import { Connection, type ConnectionOptions } from './connection/index.js';
import { Listener } from './transport/index.js';

export interface ServeOptions extends ConnectionOptions {
  socketPath: string;
  /** Parent logger (a child { device } is made); default: silent. */
  log?: Logger;
  /** The native addon (default: native/index.js). */
  native?: NativeBinding;
  /** listen(2) backlog (default 16). */
  backlog?: number;
  /** Clients kept waiting while one is attached (default 4); more are closed at once. */
  maxWaiting?: number;
}

/**
 * Events: 'connect' (Connection), 'disconnect' (Connection, reason), 'rejected'
 * (a second concurrent client was turned away).
 */
export class DeviceServer extends EventEmitter {
  readonly endpoint: Endpoint;
  readonly options: ServeOptions;
  readonly log: Logger;
  #native: NativeBinding | undefined;
  #listener: Listener | undefined;
  #connection: Connection | undefined;
  /** Accepted clients waiting for the current one to go (fds, oldest first). */
  #waiting: number[] = [];
  #closing = false;

  constructor(endpoint: Endpoint, options: ServeOptions) {
    super();
    this.endpoint = endpoint;
    this.options = options;
    this.#native = options.native;
    this.log = (options.log ?? silentLogger).child({ device: endpoint.name });
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
    const native = this.#native ?? (this.#native = (await import('../native/index.js')).native);
    this.#listener = await Listener.open(native, this.options.socketPath, (fd) => this.#onAccept(fd), this.log, {
      backlog: this.options.backlog ?? 16,
    });
  }

  #onAccept(fd: number): void {
    const native = this.#native!;
    if (this.#closing) {
      native.closeFd(fd);
      return;
    }
    if (!this.#connection) {
      this.#start(fd);
      return;
    }
    if (this.#waiting.length >= (this.options.maxWaiting ?? 4)) {
      this.log.warn({ waiting: this.#waiting.length }, 'a client is attached and too many wait: closing the new connection');
      native.closeFd(fd);
      this.emit('rejected');
      return;
    }
    this.log.info({ waiting: this.#waiting.length + 1 }, 'a client is attached: the new connection waits its turn');
    this.#waiting.push(fd);
  }

  #start(fd: number): void {
    const conn = new Connection(this.#native!, fd, this.endpoint, this.log, this.options, (c, reason) => this.#onClosed(c, reason));
    this.#connection = conn;
    this.emit('connect', conn);
  }

  #onClosed(conn: Connection, reason: string): void {
    if (this.#connection === conn) this.#connection = undefined;
    this.emit('disconnect', conn, reason);
    const next = this.#waiting.shift();
    if (next !== undefined) {
      if (this.#closing) this.#native!.closeFd(next);
      else this.#start(next);
    }
  }

  /** Stop listening, drop the client (its endpoint is detached), remove the socket file. */
  async close(): Promise<void> {
    this.#closing = true;
    this.#listener?.close();
    this.#listener = undefined;
    for (const fd of this.#waiting.splice(0)) this.#native!.closeFd(fd);
    const conn = this.#connection;
    if (conn) await conn.close('server closing');
  }
}

/** Create a DeviceServer for `endpoint` and start listening on `options.socketPath`. */
export async function serve(endpoint: Endpoint, options: ServeOptions): Promise<DeviceServer> {
  const server = new DeviceServer(endpoint, options);
  await server.listen();
  return server;
}
