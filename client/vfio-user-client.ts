/**
 * A TypeScript vfio-user client: what QEMU's `vfio-user-pci` does, as an API,
 * so device authors and our own tests can drive a device without a VM.
 *
 * ```ts
 * const client = await VfioUserClient.connect('/run/demo.sock');
 * const info = await client.getDeviceInfo();
 * const vendor = await client.cfg16(0);
 * await client.close();
 * ```
 *
 * Built on the native addon (connectUnix + openChannel: real SCM_RIGHTS).
 * Every request resolves with its decoded reply or rejects with a
 * VfioUserClientError carrying the server's `.errno`.
 */
import { native, type NativeChannel } from '../native/index.js';
import { pino, type Logger } from 'pino';
import { VfioUserCommand, Errno, HEADER_SIZE, HeaderFlag, IrqSetFlag, DmaMapFlag, DmaUnmapFlag, Limits, commandName } from '../protocol/constants.js';
import { decodeHeader, encodeErrorReply, isError, isReply, newMessage, wantsReply, hexDump, type MessageHeader } from '../protocol/header.js';
import { formatCapabilities, type Capabilities } from '../protocol/capabilities.js';
import { decodeVersion, encodeVersionRequest, type DecodedVersion } from '../protocol/version.js';
import { decodeDeviceInfo, encodeDeviceInfoRequest, type DeviceInfoMessage } from '../protocol/device.js';
import { decodeIrqInfo, encodeIrqInfoRequest, encodeSetIrqsRequest, type IrqInfoMessage } from '../protocol/irqs.js';
import {
  REGION_INFO_SIZE,
  decodeRegionInfoReply,
  decodeRegionIoFdsReply,
  encodeRegionInfoRequest,
  encodeRegionIoFdsRequest,
  type RegionInfoReply,
  type RegionIoFdsReply,
} from '../protocol/regions.js';
import { decodeRegionReadReply, encodeRegionReadRequest, encodeRegionWriteRequest } from '../protocol/region-access.js';
import { decodeDmaUnmapReply, encodeDmaMapRequest, encodeDmaUnmapRequest, type DmaUnmapMessage } from '../protocol/dma.js';
import { decodeDmaReadRequest, decodeDmaWriteRequest, encodeDmaReadReply, encodeDmaWriteReply } from '../protocol/dma-access.js';
import { VfioUserClientError } from './errors.js';
import { DmaSpace, type DmaRange } from './dma-space.js';
import { GuestMemory, type GuestBacking } from './guest-memory.js';
import { IrqSinks } from './irqs.js';
import * as pci from './pci.js';

/** QEMU 11.1's VERSION capabilities: what the client offers by default. */
export const QEMU_CAPABILITIES: Readonly<Capabilities> = Object.freeze({
  maxMsgFds: 16,
  maxDataXferSize: 1 << 20,
  pgsizes: 4096,
  maxDmaMaps: 65535,
  writeMultiple: true,
  migration: { pgsize: 4096, maxBitmapSize: 268435456 },
});

export interface ClientOptions {
  /** Capabilities to offer in VERSION (default QEMU_CAPABILITIES), or the raw JSON text to send. */
  capabilities?: Partial<Capabilities> | string;
  /** VERSION major/minor to send (default 0.0). */
  version?: { major: number; minor: number };
  /** Default per-request timeout (ms; default 10 000). A timed-out request rejects with ETIMEDOUT. */
  timeoutMs?: number;
  /** Largest message accepted from the server (default max_data_xfer_size + 4 KiB). */
  maxMessageSize?: number;
  /** Logger (default: silent). debug = one line per message. */
  log?: Logger;
  /** Skip VERSION (tests that want to send their own first message). */
  skipNegotiation?: boolean;
}

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

/** GET_REGION_INFO result, with the fd the server sent (owned by the caller: close it). */
export interface RegionInfo extends RegionInfoReply {
  fd?: number;
}

export interface SetIrqsOptions {
  /** IrqSetFlag bits: one DATA_* and one ACTION_*. */
  flags: number;
  index: number;
  start?: number;
  count: number;
  /** DATA_BOOL bytes. */
  data?: Uint8Array;
  /** DATA_EVENTFD fds (borrowed). */
  fds?: readonly number[];
  /** Override the argsz field. */
  argsz?: number;
}

export interface DmaMapOptions {
  /** Guest address of the range. */
  addr: bigint;
  /** Bytes (default: the whole backing from `offset`). */
  size?: bigint;
  /** The memory behind the range: GuestMemory (memfd), or any bytes. Default: fresh zeroed bytes of `size`. */
  backing?: GuestBacking | Uint8Array;
  /** Offset into the backing (and into its fd). */
  offset?: number;
  /** DmaMapFlag bits (default READ|WRITE). */
  flags?: number;
  /** Send the backing's fd (default: when it has one). false makes the server use DMA_READ/DMA_WRITE. */
  shareFd?: boolean;
}

interface Pending {
  command: number;
  resolve(m: RawMessage): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
}

const DEFAULT_TIMEOUT_MS = 10_000;

export class VfioUserClient {
  /** The server's VERSION reply (capabilities with defaults filled in). */
  server!: DecodedVersion;
  /** Messages that matched no pending request (replies to unknown ids, odd types); their fds were closed. */
  readonly strays: MessageHeader[] = [];
  /** Server->client requests served (DMA_READ/DMA_WRITE), by command. */
  readonly served = { dmaRead: 0, dmaWrite: 0, refused: 0 };
  /** Ranges this client mapped (their bytes answer DMA_READ/DMA_WRITE). */
  readonly dma = new DmaSpace();
  /** Resolves with the reason ('EOF', an errno name, or 'closed') when the connection ends. */
  readonly closed: Promise<string>;

  private readonly channel: NativeChannel;
  private readonly pending = new Map<number, Pending>();
  private readonly irqs = new IrqSinks();
  private readonly ownedMemory: GuestMemory[] = [];
  private nextId = 1;
  private closeReason: string | undefined;
  private resolveClosed!: (reason: string) => void;
  private readonly log: Logger;
  private readonly timeoutMs: number;
  /** Our max_data_xfer_size (the largest DMA_READ/WRITE we serve). */
  readonly maxDataXferSize: number;

  private constructor(fd: number, socketPath: string, private readonly options: ClientOptions) {
    this.log = (options.log ?? pino({ level: 'silent' })).child({ client: socketPath });
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const caps = typeof options.capabilities === 'string' ? QEMU_CAPABILITIES : { ...QEMU_CAPABILITIES, ...options.capabilities };
    this.maxDataXferSize = caps.maxDataXferSize ?? Limits.MAX_DATA_XFER_SIZE;
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.channel = native.openChannel(
      fd,
      { maxMessageSize: options.maxMessageSize ?? Math.max(Limits.MAX_MESSAGE_SIZE, this.maxDataXferSize) + 4096, maxFds: 16 },
      (message, fds) => this.onMessage(message, fds),
      (reason) => this.onClosed(reason),
    );
  }

  /** Connect to a server's socket and negotiate VERSION (unless `skipNegotiation`). */
  static async connect(socketPath: string, options: ClientOptions = {}): Promise<VfioUserClient> {
    const fd = native.connectUnix(socketPath);
    const client = new VfioUserClient(fd, socketPath, options);
    if (options.skipNegotiation) return client;
    try {
      await client.negotiate();
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  /** The JSON text this client sends in VERSION. */
  get versionJson(): string {
    const c = this.options.capabilities;
    return typeof c === 'string' ? c : formatCapabilities({ ...QEMU_CAPABILITIES, ...c });
  }

  /** Send VERSION and check the reply (major 0, fits in our request, NUL-terminated JSON object). */
  async negotiate(): Promise<DecodedVersion> {
    const v = this.options.version ?? { major: 0, minor: 0 };
    const id = this.allocId();
    const request = encodeVersionRequest(id, { major: v.major, minor: v.minor, json: this.versionJson });
    const reply = this.checked(await this.sendAndWait(id, VfioUserCommand.VERSION, request, [], this.timeoutMs));
    this.closeFds(reply.fds);
    if (reply.fds.length > 0) throw this.protocolError(VfioUserCommand.VERSION, 'VERSION reply carried fds');
    if (reply.message.byteLength > request.byteLength) {
      throw this.protocolError(VfioUserCommand.VERSION, `VERSION reply of ${reply.message.byteLength} bytes is larger than the request (${request.byteLength})`);
    }
    const decoded = decodeVersion(reply.message);
    if (decoded.major !== 0) throw this.protocolError(VfioUserCommand.VERSION, `server speaks major version ${decoded.major}`);
    this.server = decoded;
    this.log.info({ caps: decoded.capabilities }, 'negotiated');
    return decoded;
  }

  /** The server's max_data_xfer_size (after negotiation). */
  get serverMaxDataXferSize(): number {
    return this.server?.capabilities.maxDataXferSize ?? Limits.MAX_DATA_XFER_SIZE;
  }

  /** Whether the connection has ended. */
  get isClosed(): boolean {
    return this.closeReason !== undefined;
  }

  // ---------------------------------------------------------------- raw layer

  private allocId(): number {
    for (let i = 0; i < 0x10000; i++) {
      const id = this.nextId;
      this.nextId = (this.nextId + 1) & 0xffff;
      if (!this.pending.has(id)) return id;
    }
    throw new VfioUserClientError(Errno.EAGAIN, 0, 'no free message id');
  }

  private protocolError(command: number, message: string): VfioUserClientError {
    return new VfioUserClientError(Errno.EPROTO, command, message);
  }

  private closeFds(fds: readonly number[]): void {
    for (const fd of fds) {
      try {
        native.closeFd(fd);
      } catch {
        // not ours any more
      }
    }
  }

  private sendAndWait(id: number, command: number, bytes: Uint8Array, fds: readonly number[], timeoutMs: number): Promise<RawMessage> {
    if (this.closeReason !== undefined) {
      return Promise.reject(new VfioUserClientError(Errno.ECONNRESET, command, `connection closed (${this.closeReason})`));
    }
    return new Promise<RawMessage>((resolve, reject) => {
      const p: Pending = { command, resolve, reject };
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new VfioUserClientError(Errno.ETIMEDOUT, command, `${commandName(command)} id ${id}: no reply within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.pending.set(id, p);
      try {
        this.send(bytes, fds);
      } catch (err) {
        this.pending.delete(id);
        clearTimeout(p.timer);
        reject(err);
      }
    });
  }

  private send(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.log.isLevelEnabled('debug')) {
      const h = decodeHeader(bytes.byteLength >= HEADER_SIZE ? bytes : new Uint8Array(HEADER_SIZE));
      this.log.debug({ id: h.id, cmd: commandName(h.command), size: bytes.byteLength, fds: fds.length }, 'client send');
      if (this.log.isLevelEnabled('trace')) this.log.trace(hexDump(bytes));
    }
    try {
      this.channel.send(bytes, fds);
    } catch (err) {
      const code = (err as { code?: string }).code;
      throw new VfioUserClientError(code === 'EPIPE' ? Errno.ECONNRESET : Errno.EIO, 0, `send failed: ${(err as Error).message}`);
    }
  }

  /**
   * Send one command with `payload` after a header this method writes (fresh
   * id, the given flags). Resolves with the reply (fds owned by the caller);
   * with NO_REPLY in the flags resolves with undefined once queued. An error
   * reply rejects. Call as `request(cmd, payload, { fds, flags, timeoutMs })`
   * or `request(cmd, payload, fds, flags)`.
   */
  async request(
    command: number,
    payload: Uint8Array = new Uint8Array(0),
    fdsOrOptions: readonly number[] | RequestOptions = {},
    flagsArg?: number,
  ): Promise<RawMessage | undefined> {
    const options: RequestOptions = Array.isArray(fdsOrOptions)
      ? { fds: fdsOrOptions as readonly number[], flags: flagsArg }
      : (fdsOrOptions as RequestOptions);
    const flags = options.flags ?? 0;
    const id = this.allocId();
    const m = newMessage(id, command, flags, payload.byteLength);
    m.bytes.set(payload, HEADER_SIZE);
    if (flags & HeaderFlag.NO_REPLY) {
      this.send(m.bytes, options.fds);
      return undefined;
    }
    return this.checked(await this.sendAndWait(id, command, m.bytes, options.fds ?? [], options.timeoutMs ?? this.timeoutMs));
  }

  /**
   * Send bytes exactly as given (any header, even a malformed one) and wait for
   * the reply with `expectId` (default: the id in the bytes). Unlike request(),
   * an error reply resolves (look at header.flags/error): tests assert errnos.
   * With `expectId: null` nothing is awaited (resolves undefined).
   */
  async sendRaw(bytes: Uint8Array, fds: readonly number[] = [], opts: { expectId?: number | null; timeoutMs?: number } = {}): Promise<RawMessage | undefined> {
    if (opts.expectId === null) {
      this.send(bytes, fds);
      return undefined;
    }
    const id = opts.expectId ?? (bytes.byteLength >= 2 ? bytes[0]! | (bytes[1]! << 8) : 0);
    if (this.pending.has(id)) throw new Error(`id ${id} is already pending`);
    const command = bytes.byteLength >= 4 ? bytes[2]! | (bytes[3]! << 8) : 0;
    return this.sendAndWait(id, command, bytes, fds, opts.timeoutMs ?? this.timeoutMs);
  }

  /** A fresh id that no pending request uses (for sendRaw). */
  freshId(): number {
    return this.allocId();
  }

  private checked(reply: RawMessage): RawMessage {
    if (isError(reply.header)) {
      this.closeFds(reply.fds);
      throw new VfioUserClientError(reply.header.error, reply.header.command);
    }
    return reply;
  }

  private onMessage(message: Buffer, fds: number[]): void {
    const header = decodeHeader(message);
    this.log.debug({ id: header.id, cmd: commandName(header.command), size: header.size, flags: header.flags, error: header.error, fds: fds.length }, 'client recv');
    if (isReply(header)) {
      const p = this.pending.get(header.id);
      if (!p) {
        this.strays.push(header);
        this.closeFds(fds);
        this.log.warn({ id: header.id, cmd: commandName(header.command) }, 'reply to no pending request');
        return;
      }
      this.pending.delete(header.id);
      clearTimeout(p.timer);
      p.resolve({ header, message, fds });
      return;
    }
    if ((header.flags & HeaderFlag.TYPE_MASK) !== HeaderFlag.TYPE_COMMAND) {
      this.strays.push(header);
      this.closeFds(fds);
      return;
    }
    this.serveRequest(header, message, fds);
  }

  /** Answer a server->client request (DMA_READ/DMA_WRITE) from this client's DMA ranges. */
  private serveRequest(header: MessageHeader, message: Buffer, fds: number[]): void {
    let reply: Uint8Array;
    try {
      if (fds.length > 0) throw new VfioUserClientError(Errno.EINVAL, header.command, 'fds on a server request');
      if (header.command === VfioUserCommand.DMA_READ) {
        const req = decodeDmaReadRequest(message);
        if (req.count > BigInt(this.maxDataXferSize)) throw new VfioUserClientError(Errno.E2BIG, header.command, 'DMA_READ larger than max_data_xfer_size');
        const data = this.dma.read(req.addr, Number(req.count));
        reply = encodeDmaReadReply(header.id, req.addr, data);
        this.served.dmaRead++;
      } else if (header.command === VfioUserCommand.DMA_WRITE) {
        const req = decodeDmaWriteRequest(message);
        if (req.count > BigInt(this.maxDataXferSize)) throw new VfioUserClientError(Errno.E2BIG, header.command, 'DMA_WRITE larger than max_data_xfer_size');
        this.dma.write(req.addr, req.data);
        reply = encodeDmaWriteReply(header.id, req.addr, Number(req.count));
        this.served.dmaWrite++;
      } else {
        throw new VfioUserClientError(Errno.ENOSYS, header.command, `server sent ${commandName(header.command)}`);
      }
    } catch (err) {
      this.closeFds(fds);
      this.served.refused++;
      const errno = (err as { errno?: number }).errno ?? Errno.EINVAL;
      this.log.debug({ id: header.id, cmd: commandName(header.command), errno }, 'refused server request');
      reply = encodeErrorReply(header.id, header.command, errno);
    }
    if (!wantsReply(header)) return;
    try {
      this.send(reply);
    } catch {
      // connection gone: onClosed cleans up
    }
  }

  private onClosed(reason: string): void {
    this.log.info({ reason }, 'connection closed');
    this.shutdown(reason);
  }

  private shutdown(reason: string): void {
    if (this.closeReason !== undefined) return;
    this.closeReason = reason;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new VfioUserClientError(Errno.ECONNRESET, p.command, `connection closed (${reason}) before the reply to id ${id}`));
    }
    this.pending.clear();
    this.irqs.closeAll(new VfioUserClientError(Errno.ECONNRESET, VfioUserCommand.DEVICE_SET_IRQS, `connection closed (${reason})`));
    this.resolveClosed(reason);
  }

  /**
   * Close the connection, the client's eventfds and the guest memory it
   * created with createGuestMemory(). Pending requests reject with ECONNRESET. Idempotent.
   */
  close(): void {
    if (this.closeReason === undefined) this.channel.close();
    this.shutdown(this.closeReason ?? 'closed');
    this.dma.clear();
    for (const m of this.ownedMemory.splice(0)) m.close();
  }

  // ------------------------------------------------------------- typed commands

  /** DEVICE_GET_INFO. */
  async getDeviceInfo(argsz?: number): Promise<DeviceInfoMessage> {
    const r = await this.typed(VfioUserCommand.DEVICE_GET_INFO, (id) => encodeDeviceInfoRequest(id, argsz));
    return decodeDeviceInfo(r.message);
  }

  /**
   * DEVICE_GET_REGION_INFO like QEMU: asks with argsz 32, and again with the
   * reply's argsz if the capability chain did not fit. With `argsz`, asks once.
   * The returned fd (if any) belongs to the caller.
   */
  async getRegionInfo(index: number, argsz?: number): Promise<RegionInfo> {
    const ask = async (a: number): Promise<RegionInfo> => {
      const r = await this.typed(VfioUserCommand.DEVICE_GET_REGION_INFO, (id) => encodeRegionInfoRequest(id, index, a));
      if (r.fds.length > 1) {
        this.closeFds(r.fds);
        throw this.protocolError(VfioUserCommand.DEVICE_GET_REGION_INFO, `${r.fds.length} fds with region info`);
      }
      let info: RegionInfoReply;
      try {
        info = decodeRegionInfoReply(r.message);
      } catch (err) {
        this.closeFds(r.fds);
        throw err;
      }
      return r.fds.length === 1 ? { ...info, fd: r.fds[0] } : info;
    };
    if (argsz !== undefined) return ask(argsz);
    const first = await ask(REGION_INFO_SIZE);
    if (first.argsz <= REGION_INFO_SIZE) return first;
    if (first.fd !== undefined) native.closeFd(first.fd);
    return ask(first.argsz);
  }

  /** DEVICE_GET_REGION_IO_FDS (QEMU never sends it). The fds belong to the caller. */
  async getRegionIoFds(index: number, argsz = 4096): Promise<RegionIoFdsReply & { fds: number[] }> {
    const r = await this.typed(VfioUserCommand.DEVICE_GET_REGION_IO_FDS, (id) => encodeRegionIoFdsRequest(id, index, argsz));
    try {
      return { ...decodeRegionIoFdsReply(r.message), fds: r.fds };
    } catch (err) {
      this.closeFds(r.fds);
      throw err;
    }
  }

  /** DEVICE_GET_IRQ_INFO. */
  async getIrqInfo(index: number, argsz?: number): Promise<IrqInfoMessage> {
    const r = await this.typed(VfioUserCommand.DEVICE_GET_IRQ_INFO, (id) => encodeIrqInfoRequest(id, index, argsz));
    return decodeIrqInfo(r.message);
  }

  /** DEVICE_SET_IRQS as given (no chunking of fds: see enableIrqs). */
  async setIrqs(o: SetIrqsOptions): Promise<void> {
    const bytes = (id: number) =>
      encodeSetIrqsRequest(id, { flags: o.flags, index: o.index, start: o.start ?? 0, count: o.count, data: o.data, argsz: o.argsz });
    const r = await this.typed(VfioUserCommand.DEVICE_SET_IRQS, bytes, o.fds);
    this.closeFds(r.fds);
  }

  /**
   * Create `count` eventfds for vectors [start, start+count) of IRQ `index`
   * and install them with SET_IRQS(EVENTFD|TRIGGER), in chunks of the server's
   * max_msg_fds. Then `waitForIrq(index, vector)` resolves on a signal.
   */
  async enableIrqs(index: number, count: number, start = 0): Promise<void> {
    const fds = this.irqs.create(index, start, count);
    const chunk = Math.max(1, this.server?.capabilities.maxMsgFds ?? 1);
    try {
      for (let i = 0; i < fds.length; i += chunk) {
        const part = fds.slice(i, i + chunk);
        await this.setIrqs({ flags: IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, index, start: start + i, count: part.length, fds: part });
      }
    } catch (err) {
      this.irqs.remove(index, start, count);
      throw err;
    }
  }

  /** SET_IRQS(NONE|TRIGGER, count 0): disable the whole index, and close the client's eventfds for it. */
  async disableIrqs(index: number): Promise<void> {
    try {
      await this.setIrqs({ flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, index, start: 0, count: 0 });
    } finally {
      this.irqs.remove(index);
    }
  }

  /** Resolve with the number of signals (>= 1) when vector `vector` of `index` fires; ETIMEDOUT after timeoutMs. */
  waitForIrq(index: number, vector: number, timeoutMs = 5000): Promise<number> {
    return this.irqs.wait(index, vector, timeoutMs);
  }

  /** Signals seen so far on a vector. */
  irqCount(index: number, vector: number): number {
    return this.irqs.count(index, vector);
  }

  /** REGION_READ: `count` bytes at `offset` of region `index`. The reply must echo the access and carry exactly count bytes. */
  async regionRead(index: number, offset: bigint | number, count: number): Promise<Uint8Array> {
    const off = BigInt(offset);
    const r = await this.typed(VfioUserCommand.REGION_READ, (id) => encodeRegionReadRequest(id, { offset: off, region: index, count }));
    this.closeFds(r.fds);
    const reply = decodeRegionReadReply(r.message);
    if (reply.offset !== off || reply.region !== index || reply.count !== count) {
      throw this.protocolError(VfioUserCommand.REGION_READ, `REGION_READ reply (${reply.region}@${reply.offset}+${reply.count}) does not match the request`);
    }
    // a plain Uint8Array view (not a Buffer) over the reply's bytes
    return new Uint8Array(reply.data.buffer, reply.data.byteOffset, reply.data.byteLength);
  }

  /**
   * REGION_WRITE. With `posted`, the write carries NO_REPLY (like QEMU's posted
   * BAR writes): it resolves once queued and errors are never reported.
   */
  async regionWrite(index: number, offset: bigint | number, data: Uint8Array, opts: { posted?: boolean } = {}): Promise<void> {
    const off = BigInt(offset);
    if (opts.posted) {
      this.send(encodeRegionWriteRequest(this.allocId(), off, index, data, true));
      return;
    }
    const r = await this.typed(VfioUserCommand.REGION_WRITE, (id) => encodeRegionWriteRequest(id, off, index, data));
    this.closeFds(r.fds);
  }

  /** Create memfd-backed guest memory (closed with the client). */
  createGuestMemory(size: number): GuestMemory {
    const m = new GuestMemory(size);
    this.ownedMemory.push(m);
    return m;
  }

  /**
   * DMA_MAP a range of guest memory. With a GuestMemory backing its memfd goes
   * along (unless shareFd is false); otherwise the map is fd-less and the
   * client answers the server's DMA_READ/DMA_WRITE from the bytes.
   */
  async dmaMap(o: DmaMapOptions): Promise<DmaRange> {
    const offset = o.offset ?? 0;
    const raw = o.backing instanceof Uint8Array ? o.backing : o.backing?.bytes;
    const fd = o.backing instanceof Uint8Array ? undefined : o.backing?.fd;
    const size = o.size ?? (raw ? BigInt(raw.byteLength - offset) : undefined);
    if (size === undefined) throw new RangeError('dmaMap: size or backing required');
    const bytes = raw ? raw.subarray(offset, offset + Number(size)) : new Uint8Array(Number(size));
    if (BigInt(bytes.byteLength) !== size) throw new RangeError('dmaMap: range exceeds its backing');
    const flags = o.flags ?? DmaMapFlag.READ | DmaMapFlag.WRITE;
    const share = (o.shareFd ?? true) && fd !== undefined;
    const range: DmaRange = { addr: o.addr, size, bytes, flags, shared: share };
    this.dma.add(range);
    try {
      const r = await this.typed(
        VfioUserCommand.DMA_MAP,
        (id) => encodeDmaMapRequest(id, { flags, offset: share ? BigInt(offset) : 0n, addr: o.addr, size }),
        share ? [fd] : [],
      );
      this.closeFds(r.fds);
    } catch (err) {
      this.dma.remove(o.addr, size);
      throw err;
    }
    return range;
  }

  /** DMA_UNMAP of exactly one mapped range (or raw addr/size); resolves with the echoed struct. */
  async dmaUnmap(addr: bigint, size: bigint, flags = 0): Promise<DmaUnmapMessage> {
    const r = await this.typed(VfioUserCommand.DMA_UNMAP, (id) => encodeDmaUnmapRequest(id, { flags, addr, size }));
    this.closeFds(r.fds);
    if (flags & DmaUnmapFlag.ALL) this.dma.clear();
    else this.dma.remove(addr, size);
    return decodeDmaUnmapReply(r.message);
  }

  /** DMA_UNMAP with flag ALL. */
  dmaUnmapAll(): Promise<DmaUnmapMessage> {
    return this.dmaUnmap(0n, 0n, DmaUnmapFlag.ALL);
  }

  /** DEVICE_RESET. */
  async reset(): Promise<void> {
    const r = await this.typed(VfioUserCommand.DEVICE_RESET, (id) => newMessage(id, VfioUserCommand.DEVICE_RESET, HeaderFlag.TYPE_COMMAND, 0).bytes);
    this.closeFds(r.fds);
  }

  /** DEVICE_FEATURE: argsz u32, flags u32 (feature | GET/SET/PROBE), data. Resolves with the reply payload. */
  async deviceFeature(flags: number, data: Uint8Array = new Uint8Array(0), argsz = 8 + data.byteLength): Promise<Uint8Array> {
    const payload = new Uint8Array(8 + data.byteLength);
    const dv = new DataView(payload.buffer);
    dv.setUint32(0, argsz, true);
    dv.setUint32(4, flags, true);
    payload.set(data, 8);
    const r = (await this.request(VfioUserCommand.DEVICE_FEATURE, payload))!;
    this.closeFds(r.fds);
    return r.message.subarray(HEADER_SIZE);
  }

  private async typed(command: number, build: (id: number) => Uint8Array, fds: readonly number[] = []): Promise<RawMessage> {
    const id = this.allocId();
    const reply = await this.sendAndWait(id, command, build(id), fds, this.timeoutMs);
    if (reply.header.command !== command) {
      this.closeFds(reply.fds);
      throw this.protocolError(command, `reply to ${commandName(command)} says command ${commandName(reply.header.command)}`);
    }
    return this.checked(reply);
  }

  // ---------------------------------------------------------------- PCI helpers

  /** Config space read of 1 byte. */
  cfg8(offset: number): Promise<number> {
    return pci.cfgRead(this, offset, 1);
  }
  /** Config space read of 2 bytes (little-endian). */
  cfg16(offset: number): Promise<number> {
    return pci.cfgRead(this, offset, 2);
  }
  /** Config space read of 4 bytes (little-endian, unsigned). */
  cfg32(offset: number): Promise<number> {
    return pci.cfgRead(this, offset, 4);
  }
  cfgWrite8(offset: number, value: number): Promise<void> {
    return pci.cfgWrite(this, offset, 1, value);
  }
  cfgWrite16(offset: number, value: number): Promise<void> {
    return pci.cfgWrite(this, offset, 2, value);
  }
  cfgWrite32(offset: number, value: number): Promise<void> {
    return pci.cfgWrite(this, offset, 4, value);
  }
  /** Size a BAR the way firmware does (write all-ones, read back, restore). */
  probeBar(bar: number): Promise<pci.BarProbe> {
    return pci.probeBar(this, bar);
  }
  /** Walk the standard (and, for 4 KiB config spaces, extended) capability lists. */
  capabilities(): Promise<pci.PciCapability[]> {
    return pci.walkCapabilities(this);
  }
}
