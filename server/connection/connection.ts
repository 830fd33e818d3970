/**
 * One client on one device: the per-connection state machine and dispatcher.
 *
 * States: 'version' (only VERSION is accepted; anything else is EINVAL and the
 * connection closes) -> 'ready' -> 'closing' -> 'closed'. Requests are answered
 * strictly in arrival order, even when a handler is async (a queue); replies
 * from the client (to our DMA_READ/DMA_WRITE) are matched by id as they arrive,
 * so they never wait behind the queue. NO_REPLY suppresses every reply, error
 * replies included. A fatal stream error (a header announcing < 16 bytes, a
 * failed VERSION, a socket error) drops this connection only: every fd is
 * closed, the endpoint is detached, and the owner (DeviceServer) is told.
 */
import type { Logger } from 'pino';
import { VfioUserError } from '../../protocol/errors.js';
import type { Endpoint } from '../endpoint.js';
import { LogLimiter } from '../log-limiter.js';
import {
  VfioUserCommand,
  Errno,
  HEADER_SIZE,
  HeaderFlag,
  Limits,
  commandName,
  decodeHeader,
  encodeErrorReply,
  hexDump,
  isReply,
  messageType,
  wantsReply,
  type VersionCapabilities,
  type MessageHeader,
} from '../../protocol/index.js';
import { Channel, type ReceivedFds } from '../transport/index.js';
import { ConnectionClientPort } from './client-port.js';
import type { HandlerResult, RequestContext } from './context.js';
import { handlerFor } from './dispatch.js';
import { negotiateVersion } from './handlers/version.js';
import { combineObservers, type ConnectionObserver, type ConnectionState, type DmaRequestEvent } from './observer.js';
import { logTracer } from '../../trace/tracer.js';

export interface ConnectionOptions {
  /** Our max_data_xfer_size (default 1 MiB; QEMU accepts up to 64 MiB). */
  maxDataXferSize?: number;
  /** Our max_msg_fds (default 16, QEMU's limit). */
  maxMsgFds?: number;
  /**
   * Advertise write_multiple (default false). REGION_WRITE_MULTI is always
   * served; advertising it makes QEMU batch posted writes, but QEMU's flag for
   * it overlaps its "force queued" flag, so every request then takes an extra
   * iothread hop (measured: slower NVMe doorbells).
   */
  writeMultiple?: boolean;
  /** Timeout of one server-to-client DMA request (default 5000 ms, QEMU's x-msg-timeout). */
  dmaTimeoutMs?: number;
  /** On close, how long to wait for a running handler before detaching anyway (default 10 s). */
  drainTimeoutMs?: number;
  /** Reply bytes the kernel has not taken yet after which the client is dropped (default 64 MiB). */
  maxPendingBytes?: number;
  /**
   * Rate limit for every line a client can make the connection log (default:
   * one per connection). DeviceServer passes one per device, so a client that
   * reconnects in a loop does not get a fresh budget each time.
   */
  logLimiter?: LogLimiter;
  /** Sees every message, DMA request and state change (observer.ts); none: no cost. */
  observer?: ConnectionObserver;
}

interface Queued {
  header: MessageHeader;
  message: Buffer;
  fds: ReceivedFds;
}

/** An async handler running longer than this is logged (QEMU's default x-msg-timeout is 5 s). */
const SLOW_HANDLER_MS = 2000;

/** Requests (or their bytes) waiting behind a slow handler after which the client is dropped. */
const MAX_QUEUED_REQUESTS = 65536;
const MAX_QUEUED_BYTES = 64 << 20;

/**
 * Received fds held for requests waiting behind a slow handler after which the
 * client is dropped: each is an open file in this process, shared by every
 * device in it. (One message may bring up to NATIVE_MAX_FDS, so that it can be
 * answered EINVAL; QEMU sends at most a few per message.)
 */
const MAX_HELD_FDS = 1024;

/** Unsent reply bytes after which a client that does not read is dropped. */
const MAX_PENDING_BYTES = 64 << 20;

/**
 * fds on replies the client has not read after which it is dropped: a queued
 * reply keeps a dup of each (GET_REGION_INFO's region fd), one open file per
 * unread reply. QEMU reads every reply before it asks again.
 */
const MAX_UNSENT_FDS = 128;

/** fds the native layer makes room for on one message: more than we negotiate, so an excess is EINVAL, not a dropped stream. */
const NATIVE_MAX_FDS = 253;

let nextConnectionId = 1;

export class Connection {
  readonly id = nextConnectionId++;
  readonly log: Logger;
  #endpoint: Endpoint;
  /** What the client can make us log goes through here (`conn` is added to the fields). */
  readonly #limiter: LogLimiter;
  /** Resolves once the connection is closed and the endpoint detached. */
  readonly closed: Promise<void>;
  readonly #channel: Channel;
  readonly #maxDataXferSize: number;
  readonly #maxMsgFds: number;
  readonly #options: ConnectionOptions;
  #state: ConnectionState = 'version';
  #port: ConnectionClientPort | undefined;
  #client: VersionCapabilities | undefined;
  #attached = false;
  /** Requests not processed yet: #queue[#head..]. */
  #queue: Queued[] = [];
  #head = 0;
  #queuedBytes = 0;
  /** fds sent on replies while the socket had a backlog (an upper bound of the dups the send queue holds). */
  #unsentFds = 0;
  #running = false;
  /** between() waits for the running request: start no other. */
  #held = false;
  #idleWaiters: (() => void)[] = [];
  #resolveClosed!: () => void;
  #onClosed: ((conn: Connection, reason: string) => void) | undefined;
  readonly #observer: ConnectionObserver | undefined;

  /**
   * Start serving the connected socket `fd` (ownership passes to the connection).
   * `onClosed` runs once, after the endpoint was detached.
   */
  constructor(
    fd: number,
    endpoint: Endpoint,
    log: Logger,
    options: ConnectionOptions = {},
    onClosed?: (conn: Connection, reason: string) => void,
  ) {
    this.#endpoint = endpoint;
    this.log = log.child({ conn: this.id });
    this.#limiter = options.logLimiter ?? new LogLimiter(log);
    this.#options = options;
    this.#maxDataXferSize = options.maxDataXferSize ?? Limits.MAX_DATA_XFER_SIZE;
    this.#maxMsgFds = options.maxMsgFds ?? Limits.MAX_MSG_FDS;
    this.#onClosed = onClosed;
    // At debug level every message is logged decoded, one line each (trace/): `serve --trace`.
    this.#observer = this.log.isLevelEnabled('debug')
      ? combineObservers(options.observer, logTracer(this.log))
      : options.observer;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#channel = new Channel(
      fd,
      {
        maxMessageSize: this.#maxDataXferSize + 32,
        maxFds: Math.max(NATIVE_MAX_FDS, this.#maxMsgFds),
        logLimiter: this.#limiter,
      },
      {
        onMessage: (message, fds) => this.#onMessage(message, fds),
        onClose: (reason) => void this.#teardown(reason === 'EOF' ? 'client disconnected' : `socket: ${reason}`),
      },
      this.log,
    );
    this.#limiter.info('client-connected', { conn: this.id }, 'client connected');
    this.#observeState(undefined);
  }

  /** The endpoint requests go to (replaceEndpoint changes it). */
  get endpoint(): Endpoint {
    return this.#endpoint;
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The client's capabilities, once VERSION is done. */
  get clientCapabilities(): VersionCapabilities | undefined {
    return this.#client;
  }

  /** Received fds still held by the channel (leak checks). */
  get heldFds(): number {
    return this.#channel.heldFds;
  }

  /** Drop the client: close the socket and all fds, detach the endpoint. Resolves when done. */
  close(reason = 'closed by the server'): Promise<void> {
    return this.#teardown(reason);
  }

  #onMessage(message: Buffer, fds: ReceivedFds): void {
    if (this.#state === 'closing' || this.#state === 'closed') {
      fds.release('connection closing');
      return;
    }
    let header: MessageHeader;
    try {
      header = decodeHeader(message);
    } catch {
      fds.release('bad header');
      void this.#teardown('short message from the native layer');
      return;
    }
    if (this.log.isLevelEnabled('trace')) this.log.trace({ id: header.id, hex: hexDump(message) }, 'recv');
    if (header.size < HEADER_SIZE) {
      // The stream cannot be re-framed: answer and drop the client.
      fds.release('bad header');
      this.#limiter.warn(
        'malformed-header',
        { conn: this.id, cmd: commandName(header.command), id: header.id, size: header.size },
        'header size < 16: closing',
      );
      const reply = this.#replyError(header, Errno.EINVAL);
      if (this.#observer?.message)
        this.#observeMessage(header, message, 0, 0, reply, 0, Errno.EINVAL, 'header size < 16');
      void this.#teardown('malformed header');
      return;
    }
    if (isReply(header) && this.#state !== 'version') {
      fds.release('fds on a reply');
      if (!this.#port?.handleReply(header, message)) {
        this.#limiter.warn(
          'unsolicited-reply',
          { conn: this.id, cmd: commandName(header.command), id: header.id },
          'unsolicited reply dropped',
        );
      }
      return;
    }
    if (!this.#running && !this.#held && this.#head === this.#queue.length) {
      // Idle: handle it right away (the common case; no queue, and no microtask
      // hop unless the handler goes async).
      this.#runFirst({ header, message, fds });
      return;
    }
    this.#queue.push({ header, message, fds });
    this.#queuedBytes += message.byteLength;
    if (
      this.#queue.length - this.#head > MAX_QUEUED_REQUESTS ||
      this.#queuedBytes > MAX_QUEUED_BYTES ||
      this.#channel.heldFds > MAX_HELD_FDS
    ) {
      this.#limiter.warn(
        'request-queue-overflow',
        {
          conn: this.id,
          queued: this.#queue.length - this.#head,
          bytes: this.#queuedBytes,
          fds: this.#channel.heldFds,
        },
        'too many requests waiting: dropping the client',
      );
      void this.#teardown('request queue overflow');
      return;
    }
    if (!this.#running && !this.#held) this.#pump();
  }

  /** Handle `item` while idle with an empty queue; what arrives meanwhile queues behind it. */
  #runFirst(item: Queued): void {
    this.#running = true;
    const pending = this.#process(item);
    if (pending) {
      void pending.then(() => this.#pump());
      return;
    }
    if (this.#head < this.#queue.length) {
      this.#pump(); // a handler's side effect queued more (not on the socket path)
      return;
    }
    this.#running = false;
    if (this.#idleWaiters.length > 0) this.#notifyIdle();
  }

  #notifyIdle(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Process queued requests in order; synchronous handlers complete without a microtask hop. */
  #pump(): void {
    this.#running = true;
    while (this.#head < this.#queue.length) {
      if (this.#state === 'closing' || this.#state === 'closed' || this.#held) break;
      const item = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined as unknown as Queued;
      this.#queuedBytes -= item.message.byteLength;
      if (this.#head >= 1024 && this.#head * 2 >= this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      const pending = this.#process(item);
      if (pending) {
        void pending.then(() => this.#pump());
        return;
      }
    }
    if (this.#head === this.#queue.length && this.#head > 0) {
      this.#queue = [];
      this.#head = 0;
    }
    this.#running = false;
    if (this.#idleWaiters.length > 0) this.#notifyIdle();
  }

  /** Handle one request. Never throws; returns a promise only when a handler went async. */
  #process(item: Queued): Promise<void> | undefined {
    const { header, message, fds } = item;
    // Observed: when it started and what came with it (read before a handler takes the fds).
    const t0 = this.#observer === undefined ? 0 : performance.now();
    const nfds = this.#observer === undefined ? 0 : fds.count;
    if (this.#state === 'version') {
      this.#negotiate(header, message, fds, t0);
      return undefined;
    }
    let result: HandlerResult | Promise<HandlerResult>;
    try {
      result = this.#dispatch(header, message, fds);
    } catch (err) {
      this.#finish(item, undefined, err, t0, nfds);
      return undefined;
    }
    if (result instanceof Promise) {
      // QEMU gives up on a reply after x-msg-timeout (5 s by default): say so early.
      const slow = setTimeout(() => {
        this.#limiter.warn(
          'slow-request',
          { conn: this.id, cmd: commandName(header.command), id: header.id, ms: SLOW_HANDLER_MS },
          'request still running (the client may time out)',
        );
      }, SLOW_HANDLER_MS);
      return result.then(
        (r) => {
          clearTimeout(slow);
          this.#finish(item, r, undefined, t0, nfds);
        },
        (err: unknown) => {
          clearTimeout(slow);
          this.#finish(item, undefined, err, t0, nfds);
        },
      );
    }
    this.#finish(item, result, undefined, t0, nfds);
    return undefined;
  }

  #dispatch(header: MessageHeader, message: Buffer, fds: ReceivedFds): HandlerResult | Promise<HandlerResult> {
    if (messageType(header.flags) !== HeaderFlag.TYPE_COMMAND) {
      throw VfioUserError.invalid(`message type ${messageType(header.flags)} is neither command nor reply`);
    }
    if (message.byteLength < header.size) {
      throw VfioUserError.invalid(`message of ${header.size} bytes exceeds our limit of ${this.#maxDataXferSize + 32}`);
    }
    if (fds.count > this.#maxMsgFds)
      throw VfioUserError.invalid(`${fds.count} fds exceed max_msg_fds ${this.#maxMsgFds}`);
    const handler = handlerFor(header.command);
    if (!handler) throw VfioUserError.invalid(`unsupported command ${commandName(header.command)}`);
    const ctx: RequestContext = {
      header,
      message,
      fds,
      endpoint: this.#endpoint,
      log: this.log,
      maxDataXferSize: this.#maxDataXferSize,
      clientMaxMsgFds: this.#client?.maxMsgFds ?? 1,
      clientMaxDataXferSize: this.#client?.maxDataXferSize ?? Limits.MAX_DATA_XFER_SIZE,
    };
    return handler(ctx);
  }

  /** Reply to a handled request (`t0` and `nfds` only matter when observed). */
  #finish(
    { header, message, fds }: Queued,
    result: HandlerResult | undefined,
    err: unknown,
    t0: number,
    nfds: number,
  ): void {
    const closed = fds.release('not taken by the handler');
    if (closed > 0)
      this.#limiter.warn(
        'unexpected-fds',
        { conn: this.id, cmd: commandName(header.command), id: header.id, fds: closed },
        'closed unexpected fds',
      );
    if (result) {
      const replied = wantsReply(header);
      if (replied) this.#send(result.reply, result.fds);
      if (this.#observer?.message) {
        const reply = replied ? result.reply : undefined;
        this.#observeMessage(header, message, nfds, t0, reply, replied ? (result.fds?.length ?? 0) : 0, 0, undefined);
      }
      return;
    }
    let errno: number = Errno.EIO;
    let reason: string;
    const cmd = commandName(header.command);
    if (err instanceof VfioUserError) {
      errno = err.errno > 0 && err.errno <= 4096 ? err.errno : Errno.EIO;
      reason = err.message;
    } else {
      reason = `handler threw: ${err instanceof Error ? err.message : String(err)}`;
      this.#limiter.error(
        'handler-threw',
        { conn: this.id, cmd, id: header.id, err },
        'request handler threw: answering EIO',
      );
    }
    const reply = this.#replyError(header, errno);
    if (this.#observer?.message) this.#observeMessage(header, message, nfds, t0, reply, 0, errno, reason);
  }

  #observeMessage(
    header: MessageHeader,
    request: Uint8Array,
    fds: number,
    t0: number,
    reply: Uint8Array | undefined,
    replyFds: number,
    errno: number,
    reason: string | undefined,
  ): void {
    try {
      this.#observer?.message?.({
        conn: this.id,
        command: header.command,
        id: header.id,
        flags: header.flags,
        size: header.size,
        fds,
        errno,
        reason,
        replySize: reply?.byteLength ?? 0,
        replyFds,
        durationMs: t0 === 0 ? 0 : performance.now() - t0,
        request,
        reply,
      });
    } catch (err) {
      this.log.error({ err }, 'connection observer threw');
    }
  }

  #observeState(reason: string | undefined): void {
    if (!this.#observer?.state) return;
    try {
      this.#observer.state({ conn: this.id, state: this.#state, reason });
    } catch (err) {
      this.log.error({ err }, 'connection observer threw');
    }
  }

  #negotiate(header: MessageHeader, message: Buffer, fds: ReceivedFds, t0: number): void {
    const nfds = fds.count;
    const fail = (why: string): void => {
      this.#limiter.warn(
        'version-failed',
        { conn: this.id, cmd: commandName(header.command), id: header.id, why },
        'version negotiation failed',
      );
      fds.release('version failed');
      const reply = this.#replyError(header, Errno.EINVAL);
      if (this.#observer?.message) this.#observeMessage(header, message, nfds, t0, reply, 0, Errno.EINVAL, why);
      void this.#teardown(`version negotiation failed: ${why}`);
    };
    if (header.command !== VfioUserCommand.VERSION) return fail('first message is not VERSION');
    if (messageType(header.flags) !== HeaderFlag.TYPE_COMMAND) return fail('VERSION is not a command');
    if (fds.count > 0) return fail('fds attached to VERSION');
    if (message.byteLength < header.size) return fail('VERSION too large');
    let negotiated;
    try {
      negotiated = negotiateVersion(header.id, message, {
        maxMsgFds: this.#maxMsgFds,
        maxDataXferSize: this.#maxDataXferSize,
        pgsizes: Limits.PGSIZE,
        maxDmaMaps: Limits.MAX_DMA_MAPS,
        writeMultiple: this.#options.writeMultiple ?? false,
        ...(this.#endpoint.migration ? { migration: { pgsize: Limits.PGSIZE } } : {}),
      });
    } catch (err) {
      return fail(err instanceof Error ? err.message : String(err));
    }
    this.#client = negotiated.client;
    const replied = wantsReply(header);
    if (replied) this.#send(negotiated.reply);
    // A reply that cannot be sent closes the connection: nothing to attach then.
    if (this.#state !== 'version') return;
    if (this.#observer?.message)
      this.#observeMessage(header, message, 0, t0, replied ? negotiated.reply : undefined, 0, 0, undefined);
    this.#state = 'ready';
    this.#limiter.info(
      'version-negotiated',
      { conn: this.id, client: negotiated.client, server: negotiated.json },
      'version negotiated',
    );
    this.#observeState(undefined);
    this.#port = new ConnectionClientPort(
      (m) => this.#send(m),
      // Replies to our DMA_READs must also fit what we receive.
      Math.min(negotiated.client.maxDataXferSize, this.#maxDataXferSize),
      this.#options.dmaTimeoutMs ?? 5000,
      this.log,
      this.#observer?.dmaRequest ? this.#observeDma : undefined,
    );
    try {
      this.#endpoint.attach(this.#port);
      this.#attached = true;
    } catch (err) {
      this.#limiter.error('attach-failed', { conn: this.id, err }, 'endpoint.attach failed');
      void this.#teardown('endpoint.attach failed');
    }
  }

  #send(message: Uint8Array, fds?: readonly number[]): boolean {
    if (this.log.isLevelEnabled('trace')) this.log.trace({ hex: hexDump(message), fds: fds?.length }, 'send');
    const backlog = this.#channel.send(message, fds);
    if (backlog === 0) this.#unsentFds = 0;
    else if (backlog > 0 && fds !== undefined) this.#unsentFds += fds.length;
    if (
      (backlog > (this.#options.maxPendingBytes ?? MAX_PENDING_BYTES) || this.#unsentFds > MAX_UNSENT_FDS) &&
      this.#state !== 'closing' &&
      this.#state !== 'closed'
    ) {
      this.#limiter.warn(
        'client-not-reading',
        { conn: this.id, pendingBytes: backlog, unsentFds: this.#unsentFds },
        'the client does not read its replies: dropping it',
      );
      void this.#teardown('client does not read its replies');
    }
    return backlog >= 0;
  }

  /** Send an error reply unless NO_REPLY; returns what was sent. */
  #replyError(header: MessageHeader, errno: number): Uint8Array | undefined {
    if (!wantsReply(header)) return undefined;
    const reply = encodeErrorReply(header.id, header.command, errno);
    this.#send(reply);
    return reply;
  }

  readonly #observeDma = (event: Omit<DmaRequestEvent, 'conn'>): void => {
    try {
      this.#observer?.dmaRequest?.({ conn: this.id, ...event });
    } catch (err) {
      this.log.error({ err }, 'connection observer threw');
    }
  };

  // ---- replacing the endpoint (server/replace-device.ts) ----

  /**
   * Run `task` between two requests, like a request of its own: the request
   * being handled completes first (at most `timeoutMs`, else this rejects
   * and nothing ran), requests arriving meanwhile wait in the queue and are
   * handled, in order, once `task` settles, by the endpoint current then. A
   * client that disconnects meanwhile is detached after `task`.
   */
  async between<T>(task: () => Promise<T>, timeoutMs: number): Promise<T> {
    if (this.#state === 'closing' || this.#state === 'closed') throw new Error('the connection is closing');
    if (this.#held) throw new Error('between() is already waiting');
    this.#held = true;
    let idle: boolean;
    try {
      idle = await this.#whenIdle(timeoutMs);
    } finally {
      this.#held = false;
    }
    // Not idle: the running request pumps the queue when it completes.
    if (!idle) throw new Error(`a request was still running after ${timeoutMs} ms`);
    if (this.#closing()) throw new Error('the connection is closing');
    this.#running = true;
    try {
      return await task();
    } finally {
      this.#pump(); // the queue, then idle (which a teardown may be waiting for)
    }
  }

  /**
   * From now on requests go to `next`, which is attached to the client's port
   * if the client negotiated VERSION. The previous endpoint is neither
   * detached nor told: the caller (inside between()) hands it over.
   */
  replaceEndpoint(next: Endpoint): void {
    this.#endpoint = next;
    if (this.#attached && this.#port) next.attach(this.#port);
  }

  /** A teardown started (a getter, so TypeScript does not narrow #state across awaits). */
  #closing(): boolean {
    return this.#state === 'closing' || this.#state === 'closed';
  }

  #whenIdle(timeoutMs: number): Promise<boolean> {
    if (!this.#running) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#idleWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  async #teardown(reason: string): Promise<void> {
    if (this.#state === 'closing' || this.#state === 'closed') return this.closed;
    this.#state = 'closing';
    this.#observeState(reason);
    // Let a final error reply reach the kernel before the socket goes.
    for (let i = 0; i < 10 && this.#channel.pendingBytes > 0; i++) await new Promise((r) => setTimeout(r, 10));
    this.#channel.close();
    this.#port?.close(reason);
    for (let i = this.#head; i < this.#queue.length; i++) this.#queue[i]!.fds.release('connection closing');
    this.#queue = [];
    this.#head = 0;
    this.#queuedBytes = 0;
    if (!(await this.#whenIdle(this.#options.drainTimeoutMs ?? 10_000))) {
      this.#limiter.warn(
        'detach-while-running',
        { conn: this.id },
        'a request handler is still running: detaching anyway',
      );
    }
    if (this.#attached) {
      this.#attached = false;
      try {
        await this.#endpoint.detach();
      } catch (err) {
        this.#limiter.error('detach-failed', { conn: this.id, err }, 'endpoint.detach failed');
      }
    }
    this.#state = 'closed';
    this.#limiter.info('client-disconnected', { conn: this.id, reason }, 'client disconnected');
    this.#observeState(reason);
    this.#resolveClosed();
    this.#onClosed?.(this, reason);
    return undefined;
  }
}
