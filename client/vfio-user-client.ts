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
 *
 * This class is the API; the work is done by one file per concern:
 * request-channel.ts (ids, reply matching, timeouts), negotiation.ts
 * (VERSION), device.ts, region-access.ts, irqs.ts (+ irq-sinks.ts), dma.ts
 * (+ dma-map-table.ts), pci.ts and migration.ts (+ migrate.ts, the VMM's
 * sequence).
 */
import { pino, type Logger } from 'pino';
import { native } from '../native/index.js';
import { VfioUserCommand, DmaUnmapFlag, Errno, Limits } from '../protocol/constants.js';
import type { MessageHeader } from '../protocol/header.js';
import type { VersionCapabilities } from '../protocol/capabilities.js';
import type { DecodedVersion } from '../protocol/version.js';
import type { DeviceInfoMessage } from '../protocol/device.js';
import type { IrqInfoMessage } from '../protocol/irqs.js';
import type { RegionIoFdsReply } from '../protocol/regions.js';
import type { DmaUnmapMessage } from '../protocol/dma.js';
import { VfioUserClientError } from './errors.js';
import { RequestChannel, type RawMessage, type RequestOptions } from './request-channel.js';
import { negotiate, offeredCapabilities, versionJson } from './negotiation.js';
import * as device from './device.js';
import * as regions from './region-access.js';
import * as irqs from './irqs.js';
import * as dmaCommands from './dma.js';
import { DmaMapTable, type DmaMapEntry } from './dma-map-table.js';
import { GuestMemory } from './guest-memory.js';
import { IrqSinks } from './irq-sinks.js';
import * as pci from './pci.js';
import * as migration from './migration.js';

export interface ClientOptions {
  /** Capabilities to offer in VERSION (default QEMU_CAPABILITIES), or the raw JSON text to send. */
  capabilities?: Partial<VersionCapabilities> | string;
  /** VERSION major/minor to send (default 0.0). */
  version?: { major: number; minor: number };
  /** Default per-request timeout (ms; default 10 000). A timed-out request rejects with ETIMEDOUT. */
  timeoutMs?: number;
  /** Largest message accepted from the server (default max_data_xfer_size + 4 KiB). */
  maxMessageSize?: number;
  /** Logger (default: silent). debug = one line per message. */
  log?: Logger | undefined;
  /** Skip VERSION (tests that want to send their own first message). */
  skipNegotiation?: boolean;
}

const DEFAULT_TIMEOUT_MS = 10_000;

export class VfioUserClient {
  /** The server's VERSION reply (capabilities with defaults filled in); undefined until negotiate() (skipNegotiation). */
  server: DecodedVersion | undefined;
  /** Server->client requests served (DMA_READ/DMA_WRITE), by command. */
  readonly served: dmaCommands.ServedRequests = { dmaRead: 0, dmaWrite: 0, refused: 0 };
  /** Ranges this client mapped (their bytes answer DMA_READ/DMA_WRITE). */
  readonly dma = new DmaMapTable();
  /** Resolves with the reason ('EOF', an errno name, or 'closed') when the connection ends. */
  readonly closed: Promise<string>;
  /** Our max_data_xfer_size (the largest DMA_READ/WRITE we serve). */
  readonly maxDataXferSize: number;

  readonly #channel: RequestChannel;
  readonly #irqs = new IrqSinks();
  readonly #ownedMemory: GuestMemory[] = [];
  readonly #options: ClientOptions;
  readonly #log: Logger;

  private constructor(fd: number, socketPath: string, options: ClientOptions) {
    this.#options = options;
    this.#log = (options.log ?? pino({ level: 'silent' })).child({ client: socketPath });
    // Partial: a JS caller's `{ maxDataXferSize: undefined }` comes through the merge as it is.
    const offered: Partial<VersionCapabilities> = offeredCapabilities(options.capabilities);
    this.maxDataXferSize = offered.maxDataXferSize ?? Limits.MAX_DATA_XFER_SIZE;
    const dmaRequests: dmaCommands.DmaRequestContext = {
      table: this.dma,
      served: this.served,
      maxDataXferSize: this.maxDataXferSize,
      log: this.#log,
    };
    this.#channel = new RequestChannel(fd, {
      maxMessageSize: options.maxMessageSize ?? Math.max(Limits.MAX_MESSAGE_SIZE, this.maxDataXferSize) + 4096,
      timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      log: this.#log,
      onRequest: (header, message, fds) =>
        dmaCommands.serveDmaRequest(this.#channel, dmaRequests, header, message, fds),
      onShutdown: (reason) =>
        this.#irqs.closeAll(
          new VfioUserClientError(Errno.ECONNRESET, VfioUserCommand.DEVICE_SET_IRQS, `connection closed (${reason})`),
        ),
    });
    this.closed = this.#channel.closed;
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
    return versionJson(this.#options.capabilities);
  }

  /** Send VERSION and check the reply (major 0, fits in our request, NUL-terminated JSON object). */
  async negotiate(): Promise<DecodedVersion> {
    const decoded = await negotiate(this.#channel, this.#options.version ?? { major: 0, minor: 0 }, this.versionJson);
    this.server = decoded;
    this.#log.info({ caps: decoded.capabilities }, 'negotiated');
    return decoded;
  }

  /** The server's max_data_xfer_size (after negotiation). */
  get serverMaxDataXferSize(): number {
    return this.server?.capabilities.maxDataXferSize ?? Limits.MAX_DATA_XFER_SIZE;
  }

  /** Messages that matched no pending request (replies to unknown ids, odd types), the first 4096; their fds were closed. */
  get strays(): MessageHeader[] {
    return this.#channel.strays;
  }

  /** Whether the connection has ended. */
  get isClosed(): boolean {
    return this.#channel.closeReason !== undefined;
  }

  /**
   * Send one command with `payload` after a header this method writes (fresh
   * id, the given flags). Resolves with the reply (fds owned by the caller);
   * with NO_REPLY in the flags resolves with undefined once queued. An error
   * reply rejects. Call as `request(cmd, payload, { fds, flags, timeoutMs })`
   * or `request(cmd, payload, fds, flags)`.
   */
  request(
    command: number,
    payload: Uint8Array = new Uint8Array(0),
    fdsOrOptions: readonly number[] | RequestOptions = {},
    flagsArg?: number,
  ): Promise<RawMessage | undefined> {
    const options: RequestOptions = Array.isArray(fdsOrOptions)
      ? { fds: fdsOrOptions as readonly number[], ...(flagsArg !== undefined && { flags: flagsArg }) }
      : (fdsOrOptions as RequestOptions);
    return this.#channel.request(command, payload, options);
  }

  /**
   * Send bytes exactly as given (any header, even a malformed one) and wait for
   * the reply with `expectId` (default: the id in the bytes). Unlike request(),
   * an error reply resolves (look at header.flags/error): tests assert errnos.
   * With `expectId: null` nothing is awaited (resolves undefined).
   */
  sendRaw(
    bytes: Uint8Array,
    fds: readonly number[] = [],
    opts: { expectId?: number | null; timeoutMs?: number } = {},
  ): Promise<RawMessage | undefined> {
    return this.#channel.sendRaw(bytes, fds, opts);
  }

  /** A fresh id that no pending request uses (for sendRaw). */
  freshId(): number {
    return this.#channel.allocId();
  }

  /**
   * Close the connection, the client's eventfds and the guest memory it
   * created with createGuestMemory(). Pending requests reject with ECONNRESET. Idempotent.
   */
  close(): void {
    this.#channel.close();
    this.dma.clear();
    for (const m of this.#ownedMemory.splice(0)) m.close();
  }

  // ------------------------------------------------------------- device

  /** DEVICE_GET_INFO. */
  getDeviceInfo(argsz?: number): Promise<DeviceInfoMessage> {
    return device.getDeviceInfo(this.#channel, argsz);
  }

  /** DEVICE_RESET. */
  reset(): Promise<void> {
    return device.reset(this.#channel);
  }

  /** DEVICE_FEATURE: argsz u32, flags u32 (feature | GET/SET/PROBE), data. Resolves with the reply payload. */
  deviceFeature(flags: number, data: Uint8Array = new Uint8Array(0), argsz = 8 + data.byteLength): Promise<Uint8Array> {
    return device.deviceFeature(this.#channel, flags, data, argsz);
  }

  // ------------------------------------------------------------- regions

  /**
   * DEVICE_GET_REGION_INFO like QEMU: asks with argsz 32, and again with the
   * reply's argsz if the capability chain did not fit. With `argsz`, asks once.
   * The returned fd (if any) belongs to the caller.
   */
  getRegionInfo(index: number, argsz?: number): Promise<regions.RegionInfoWithFd> {
    return regions.getRegionInfo(this.#channel, index, argsz);
  }

  /** DEVICE_GET_REGION_IO_FDS (QEMU never sends it). The fds belong to the caller. */
  getRegionIoFds(index: number, argsz = 4096): Promise<RegionIoFdsReply & { fds: number[] }> {
    return regions.getRegionIoFds(this.#channel, index, argsz);
  }

  /** REGION_READ: `count` bytes at `offset` of region `index`. The reply must echo the access and carry exactly count bytes. */
  regionRead(index: number, offset: bigint | number, count: number): Promise<Uint8Array> {
    return regions.regionRead(this.#channel, index, offset, count);
  }

  /**
   * REGION_WRITE. With `posted`, the write carries NO_REPLY (like QEMU's posted
   * BAR writes): it resolves once queued and errors are never reported.
   */
  regionWrite(
    index: number,
    offset: bigint | number,
    data: Uint8Array,
    opts: { posted?: boolean } = {},
  ): Promise<void> {
    return regions.regionWrite(this.#channel, index, offset, data, opts.posted ?? false);
  }

  // ------------------------------------------------------------- interrupts

  /** DEVICE_GET_IRQ_INFO. */
  getIrqInfo(index: number, argsz?: number): Promise<IrqInfoMessage> {
    return irqs.getIrqInfo(this.#channel, index, argsz);
  }

  /** DEVICE_SET_IRQS as given (no chunking of fds: see enableIrqs). */
  setIrqs(o: irqs.SetIrqsOptions): Promise<void> {
    return irqs.setIrqs(this.#channel, o);
  }

  /**
   * Create `count` eventfds for vectors [start, start+count) of IRQ `index`
   * and install them with SET_IRQS(EVENTFD|TRIGGER), in chunks of the server's
   * max_msg_fds. Then `waitForIrq(index, vector)` resolves on a signal.
   */
  enableIrqs(index: number, count: number, start = 0): Promise<void> {
    return irqs.enableIrqs(this.#channel, this.#irqs, this.server?.capabilities.maxMsgFds ?? 1, index, count, start);
  }

  /** SET_IRQS(NONE|TRIGGER, count 0): disable the whole index, and close the client's eventfds for it. */
  disableIrqs(index: number): Promise<void> {
    return irqs.disableIrqs(this.#channel, this.#irqs, index);
  }

  /** Resolve with the number of signals (>= 1) when vector `vector` of `index` fires; ETIMEDOUT after timeoutMs. */
  waitForIrq(index: number, vector: number, timeoutMs = 5000): Promise<number> {
    return this.#irqs.wait(index, vector, timeoutMs);
  }

  /** Signals seen so far on a vector. */
  irqCount(index: number, vector: number): number {
    return this.#irqs.count(index, vector);
  }

  // ------------------------------------------------------------- DMA

  /** Create memfd-backed guest memory (closed with the client). */
  createGuestMemory(size: number): GuestMemory {
    const m = new GuestMemory(size);
    this.#ownedMemory.push(m);
    return m;
  }

  /**
   * DMA_MAP a range of guest memory. With a GuestMemory backing its memfd goes
   * along (unless shareFd is false); otherwise the map is fd-less and the
   * client answers the server's DMA_READ/DMA_WRITE from the bytes.
   */
  dmaMap(o: dmaCommands.DmaMapOptions): Promise<DmaMapEntry> {
    return dmaCommands.dmaMap(this.#channel, this.dma, o);
  }

  /** DMA_UNMAP of exactly one mapped range (or raw addr/size); resolves with the echoed struct. */
  dmaUnmap(addr: bigint, size: bigint, flags = 0): Promise<DmaUnmapMessage> {
    return dmaCommands.dmaUnmap(this.#channel, this.dma, addr, size, flags);
  }

  /** DMA_UNMAP with flag ALL. */
  dmaUnmapAll(): Promise<DmaUnmapMessage> {
    return this.dmaUnmap(0n, 0n, DmaUnmapFlag.ALL);
  }

  // ------------------------------------------------------------- migration

  /** DEVICE_FEATURE GET MIGRATION: the MigrationFlag bits (STOP_COPY, P2P, PRE_COPY). EINVAL: the device cannot migrate. */
  migrationFlags(): Promise<number> {
    return migration.migrationFlags(this.#channel);
  }

  /** DEVICE_FEATURE PROBE of `feature` (DeviceFeature) with `ops` (DeviceFeatureFlag.GET and/or SET): whether it is supported. */
  probeFeature(feature: number, ops = 0): Promise<boolean> {
    return migration.probeFeature(this.#channel, feature, ops);
  }

  /** GET MIG_DEVICE_STATE: the device's MigrationState. */
  migrationState(): Promise<number> {
    return migration.migrationState(this.#channel);
  }

  /** SET MIG_DEVICE_STATE: the server walks to `state` (a MigrationState) and replies when it is there. */
  setMigrationState(state: number): Promise<void> {
    return migration.setMigrationState(this.#channel, state);
  }

  /** One MIG_DATA_READ of at most `size` bytes; fewer (or none) means the data ends. */
  readMigrationData(size: number): Promise<Uint8Array> {
    return migration.readMigrationData(this.#channel, size);
  }

  /** One MIG_DATA_WRITE. */
  writeMigrationData(data: Uint8Array): Promise<void> {
    return migration.writeMigrationData(this.#channel, data);
  }

  /** MIG_DATA_READ in chunks of `chunkSize` (default: the largest both sides take) until the data ends. */
  async readMigrationStream(chunkSize = this.#migrationChunk()): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const part = await this.readMigrationData(chunkSize);
      parts.push(part);
      total += part.byteLength;
      if (part.byteLength < chunkSize) break;
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }

  /** `data` in MIG_DATA_WRITEs of at most `chunkSize` bytes. */
  async writeMigrationStream(data: Uint8Array, chunkSize = this.#migrationChunk()): Promise<void> {
    for (let at = 0; at < data.byteLength; at += chunkSize)
      await this.writeMigrationData(data.subarray(at, at + chunkSize));
  }

  #migrationChunk(): number {
    return Math.min(this.maxDataXferSize, this.serverMaxDataXferSize);
  }

  /**
   * DMA_LOGGING_START: the server marks the pages the device writes. No
   * ranges: all memory. Resolves with the page size the server uses.
   */
  startDirtyLogging(
    o: { pageSize?: bigint; ranges?: readonly { iova: bigint; length: bigint }[] } = {},
  ): Promise<bigint> {
    return migration.startDirtyLogging(this.#channel, o.pageSize ?? 4096n, o.ranges ?? []);
  }

  /** DMA_LOGGING_STOP. */
  stopDirtyLogging(): Promise<void> {
    return migration.stopDirtyLogging(this.#channel);
  }

  /** DMA_LOGGING_REPORT: the pages of [iova, iova+length) written since the last report (which the server then clears). */
  dirtyBitmap(iova: bigint, length: bigint, pageSize = 4096n): Promise<migration.DirtyBitmap> {
    return migration.dirtyBitmap(this.#channel, iova, length, pageSize);
  }

  // ------------------------------------------------------------- PCI helpers

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
  /**
   * Set COMMAND.MEMORY and COMMAND.MASTER (what a guest driver's
   * pci_enable_device + pci_set_master do): a device checks bus mastering
   * before DMA (`dev.busMasterEnabled`), as QEMU refuses DMA without it.
   * Returns COMMAND as read back.
   */
  enableDevice(options?: pci.EnableOptions): Promise<number> {
    return pci.enableDevice(this, options);
  }
  /** Read a 32-bit little-endian register of BAR `bar` (region 0-5). */
  barRead32(bar: number, offset: number): Promise<number> {
    return pci.barRead32(this, bar, offset);
  }
  /** Write a 32-bit little-endian register of BAR `bar`; `posted` sets NO_REPLY as QEMU does for memory BARs. */
  barWrite32(bar: number, offset: number, value: number, options: { posted?: boolean } = {}): Promise<void> {
    return pci.barWrite32(this, bar, offset, value, options.posted ?? false);
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
