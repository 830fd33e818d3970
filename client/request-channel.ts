/**
 * RequestChannel: the client's end of the socket. It sends messages (one
 * debug line each), gives every request a fresh id and matches the server's
 * replies to the requests waiting for them (with a timeout), and hands the
 * server's own requests (DMA_READ/DMA_WRITE) to the client.
 */
import type { Logger } from 'pino';
import { native, type NativeChannel } from '../native/index.js';
import { Errno, HEADER_SIZE, HeaderFlag, commandName } from '../protocol/constants.js';
import { decodeHeader, hexDump, isError, isReply, newMessage, type MessageHeader } from '../protocol/header.js';
import { VfioUserClientError } from './errors.js';

/** A reply (or a raw message) as it arrived. */
export interface RawMessage {
  header: MessageHeader;
  /** The whole message, header included. */
  message: Buffer;
  /** fds that came with it, owned by the receiver (close them). */
  fds: number[];
}

export interface RequestOptions {
  /** Header flags to add (e.g. HeaderFlag.NO_REPLY). */
  flags?: number;
  /** fds to send (borrowed: the caller keeps and closes its copies). */
  fds?: readonly number[];
  timeoutMs?: number;
}

export interface RequestChannelOptions {
  /** Largest message accepted from the server. */
  maxMessageSize: number;
  /** Default per-request timeout (ms). */
  timeoutMs: number;
  log: Logger;
  /** A request from the server (a command, not a reply); the fds are the callee's. */
  onRequest(header: MessageHeader, message: Buffer, fds: number[]): void;
  /** The connection ended (after the pending requests were rejected). */
  onShutdown(reason: string): void;
}

interface Pending {
  command: number;
  resolve(m: RawMessage): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
}

/** Close fds the client received and does not keep (ignoring ones already gone). */
export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      native.closeFd(fd);
    } catch {
      // not ours any more
    }
  }
}

/** The server broke the protocol (a reply that does not match its request...). */
export function protocolError(command: number, message: string): VfioUserClientError {
  return new VfioUserClientError(Errno.EPROTO, command, message);
}

/** Stray messages kept in `strays` (the first ones): a hostile server could send them forever. */
const MAX_STRAYS = 4096;
/**
 * Stray replies logged at warn per connection; later ones at debug only, so a
 * server cannot flood the client's log (the client layer does not reach the
 * server's LogLimiter).
 */
const WARNED_STRAYS = 5;

export class RequestChannel {
  /** Messages that matched no pending request (replies to unknown ids, odd types), the first 4096; their fds were closed. */
  readonly strays: MessageHeader[] = [];
  /** Stray messages so far, including those beyond `strays`. */
  #strayCount = 0;
  /** Resolves with the reason ('EOF', an errno name, or 'closed') when the connection ends. */
  readonly closed: Promise<string>;
  readonly timeoutMs: number;
  readonly #channel: NativeChannel;
  readonly #pending = new Map<number, Pending>();
  readonly #options: RequestChannelOptions;
  readonly #log: Logger;
  #nextId = 1;
  #closeReason: string | undefined;
  #resolveClosed!: (reason: string) => void;

  /** Takes ownership of the connected socket `fd`. */
  constructor(fd: number, options: RequestChannelOptions) {
    this.#options = options;
    this.#log = options.log;
    this.timeoutMs = options.timeoutMs;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#channel = native.openChannel(
      fd,
      { maxMessageSize: options.maxMessageSize, maxFds: 16 },
      (message, fds) => this.#onMessage(message, fds),
      (reason) => this.#onClosed(reason),
    );
  }

  /** Why the connection ended; undefined while it is open. */
  get closeReason(): string | undefined {
    return this.#closeReason;
  }

  /** A fresh id that no pending request uses. */
  allocId(): number {
    for (let i = 0; i < 0x10000; i++) {
      const id = this.#nextId;
      this.#nextId = (this.#nextId + 1) & 0xffff;
      if (!this.#pending.has(id)) return id;
    }
    throw new VfioUserClientError(Errno.EAGAIN, 0, 'no free message id');
  }

  /** Queue one message (fds borrowed). A closed connection throws ECONNRESET, another send failure EIO. */
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.#log.isLevelEnabled('debug')) {
      const h = decodeHeader(bytes.byteLength >= HEADER_SIZE ? bytes : new Uint8Array(HEADER_SIZE));
      this.#log.debug(
        { id: h.id, cmd: commandName(h.command), size: bytes.byteLength, fds: fds.length },
        'client send',
      );
      if (this.#log.isLevelEnabled('trace')) this.#log.trace(hexDump(bytes));
    }
    try {
      this.#channel.send(bytes, fds);
    } catch (err) {
      const code = (err as { code?: string }).code;
      throw new VfioUserClientError(
        code === 'EPIPE' ? Errno.ECONNRESET : Errno.EIO,
        0,
        `send failed: ${(err as Error).message}`,
      );
    }
  }

  /** Send `bytes` and resolve with the message that answers `id` (error replies included); ETIMEDOUT, ECONNRESET. */
  sendAndWait(
    id: number,
    command: number,
    bytes: Uint8Array,
    fds: readonly number[],
    timeoutMs: number,
  ): Promise<RawMessage> {
    if (this.#closeReason !== undefined) {
      return Promise.reject(
        new VfioUserClientError(Errno.ECONNRESET, command, `connection closed (${this.#closeReason})`),
      );
    }
    return new Promise<RawMessage>((resolve, reject) => {
      const p: Pending = { command, resolve, reject };
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        p.timer = setTimeout(() => {
          this.#pending.delete(id);
          reject(
            new VfioUserClientError(
              Errno.ETIMEDOUT,
              command,
              `${commandName(command)} id ${id}: no reply within ${timeoutMs} ms`,
            ),
          );
        }, timeoutMs);
      }
      this.#pending.set(id, p);
      try {
        this.send(bytes, fds);
      } catch (err) {
        this.#pending.delete(id);
        clearTimeout(p.timer);
        reject(err);
      }
    });
  }

  /** `reply`, unless it is an error reply: then its fds are closed and it throws with the server's errno. */
  checked(reply: RawMessage): RawMessage {
    if (isError(reply.header)) {
      closeFds(reply.fds);
      throw new VfioUserClientError(reply.header.error, reply.header.command);
    }
    return reply;
  }

  /** Send the request `build(id)` builds and resolve with its successful reply for the same command (EPROTO otherwise). */
  async typed(command: number, build: (id: number) => Uint8Array, fds: readonly number[] = []): Promise<RawMessage> {
    const id = this.allocId();
    const reply = await this.sendAndWait(id, command, build(id), fds, this.timeoutMs);
    if (reply.header.command !== command) {
      closeFds(reply.fds);
      throw protocolError(
        command,
        `reply to ${commandName(command)} says command ${commandName(reply.header.command)}`,
      );
    }
    return this.checked(reply);
  }

  /** VfioUserClient.request: `payload` after a header written here; with NO_REPLY resolves undefined once queued. */
  async request(command: number, payload: Uint8Array, options: RequestOptions): Promise<RawMessage | undefined> {
    const flags = options.flags ?? 0;
    const id = this.allocId();
    const m = newMessage(id, command, flags, payload.byteLength);
    m.bytes.set(payload, HEADER_SIZE);
    if (flags & HeaderFlag.NO_REPLY) {
      this.send(m.bytes, options.fds);
      return undefined;
    }
    return this.checked(
      await this.sendAndWait(id, command, m.bytes, options.fds ?? [], options.timeoutMs ?? this.timeoutMs),
    );
  }

  /** VfioUserClient.sendRaw: the bytes as given; error replies resolve. */
  async sendRaw(
    bytes: Uint8Array,
    fds: readonly number[],
    opts: { expectId?: number | null; timeoutMs?: number },
  ): Promise<RawMessage | undefined> {
    if (opts.expectId === null) {
      this.send(bytes, fds);
      return undefined;
    }
    const id = opts.expectId ?? (bytes.byteLength >= 2 ? bytes[0]! | (bytes[1]! << 8) : 0);
    if (this.#pending.has(id)) throw new Error(`id ${id} is already pending`);
    const command = bytes.byteLength >= 4 ? bytes[2]! | (bytes[3]! << 8) : 0;
    return this.sendAndWait(id, command, bytes, fds, opts.timeoutMs ?? this.timeoutMs);
  }

  /** Close the socket (if still open) and end the connection: pending requests reject with ECONNRESET. Idempotent. */
  close(): void {
    if (this.#closeReason === undefined) this.#channel.close();
    this.#shutdown(this.#closeReason ?? 'closed');
  }

  #onMessage(message: Buffer, fds: number[]): void {
    const header = decodeHeader(message);
    this.#log.debug(
      {
        id: header.id,
        cmd: commandName(header.command),
        size: header.size,
        flags: header.flags,
        error: header.error,
        fds: fds.length,
      },
      'client recv',
    );
    if (isReply(header)) {
      const p = this.#pending.get(header.id);
      if (!p) {
        this.#stray(header, fds);
        const fields = { id: header.id, cmd: commandName(header.command), strays: this.#strayCount };
        if (this.#strayCount <= WARNED_STRAYS) {
          this.#log.warn(
            fields,
            this.#strayCount === WARNED_STRAYS
              ? 'reply to no pending request (more are logged at debug only)'
              : 'reply to no pending request',
          );
        } else {
          this.#log.debug(fields, 'reply to no pending request');
        }
        return;
      }
      this.#pending.delete(header.id);
      clearTimeout(p.timer);
      p.resolve({ header, message, fds });
      return;
    }
    if ((header.flags & HeaderFlag.TYPE_MASK) !== HeaderFlag.TYPE_COMMAND) {
      this.#stray(header, fds);
      return;
    }
    this.#options.onRequest(header, message, fds);
  }

  #stray(header: MessageHeader, fds: readonly number[]): void {
    closeFds(fds);
    this.#strayCount++;
    if (this.strays.length < MAX_STRAYS) this.strays.push(header);
  }

  #onClosed(reason: string): void {
    this.#log.info({ reason }, 'connection closed');
    this.#shutdown(reason);
  }

  #shutdown(reason: string): void {
    if (this.#closeReason !== undefined) return;
    this.#closeReason = reason;
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(
        new VfioUserClientError(
          Errno.ECONNRESET,
          p.command,
          `connection closed (${reason}) before the reply to id ${id}`,
        ),
      );
    }
    this.#pending.clear();
    this.#options.onShutdown(reason);
    this.#resolveClosed(reason);
  }
}
