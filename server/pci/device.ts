/**
 * PciDevice: a PCI function written in TypeScript, served to a vfio-user
 * client (QEMU's vfio-user-pci) as an Endpoint.
 *
 * ```ts
 * const dev = new PciDevice({
 *   name: 'demo',
 *   id: { vendor: 0x1b36, device: 0x0005, classCode: 0xff0000 },
 *   bars: [{ index: 0, size: 0x1000, read: (off) => regs[off >> 2], write: (off, _s, v) => { regs[off >> 2] = v; } }],
 *   interrupts: { intx: true, msix: { vectors: 4, bar: 4 } },
 *   onReset: () => regs.fill(0),
 * });
 * dev.irq.trigger(0);
 * ```
 *
 * Regions: BAR0-5 (0-5), ROM (6), config (7), VGA (8, absent). IRQ indexes:
 * INTx, MSI, MSI-X, ERR, REQ.
 */
import type { Logger } from 'pino';
import { DmaSpace } from '../dma/index.js';
import { VfioUserError } from '../../protocol/errors.js';
import {
  type ClientPort,
  type DmaMapRequest,
  type Endpoint,
  type IrqInfo,
  type RegionDescription,
  type ResetReason,
  type SetIrqsRequest,
} from '../endpoint.js';
import { Interrupts } from '../irq/interrupts.js';
import { defaultLogger } from '../log.js';
import { LogLimiter } from '../log-limiter.js';
import { Limits, PciIrq, PciRegion, RegionFlag } from '../../protocol/constants.js';
import { layoutBars, nextPowerOfTwo, type MsixLayout } from './bar-layout.js';
import { BarRegion } from './bar-region.js';
import type { Capability, ExtendedCapability } from './capabilities/capability.js';
import { placeCapabilities, placeExtendedCapabilities } from './capabilities/chain.js';
import { expressCapability } from './capabilities/express.js';
import { msiCapability, msiRegisters } from './capabilities/msi.js';
import { msixCapability } from './capabilities/msix.js';
import { powerManagementCapability } from './capabilities/power-management.js';
import { serialNumberCapability } from './capabilities/serial-number.js';
import { vendorCapability, vendorExtendedCapability } from './capabilities/vendor.js';
import { ConfigSpace } from './config-space.js';
import { buildHeader, Cfg, PciCommand, PciStatus } from './header.js';
import { MsixTable } from './msix-table.js';
import type { ExpressOptions, IntxPin, PciDeviceOptions } from './types.js';

const CONFIG_SIZE_PCI = 256;
const CONFIG_SIZE_EXPRESS = 4096;

/** Where the device's capabilities landed in config space (offsets; absent = not present). */
export interface CapabilityOffsets {
  pm?: number;
  msi?: number;
  msix?: number;
  express?: number;
  vendor: number[];
  dsn?: number;
  vendorExt: number[];
}

export class PciDevice implements Endpoint {
  readonly name: string;
  readonly numRegions = PciRegion.COUNT;
  readonly numIrqs = PciIrq.COUNT;
  readonly resetSupported = true;

  /** The device's logger (child `{ device: name }`). */
  readonly log: Logger;
  /** Interrupts: `dev.irq.trigger(vector)`. */
  readonly irq: Interrupts;
  /** The client's guest memory: `await dev.dma.read(addr, length)`, `dev.dma.write(addr, bytes)`. */
  readonly dma: DmaSpace;
  /** Emulated configuration space (256 bytes, or 4 KiB with `express`). */
  readonly config: ConfigSpace;
  /** Where each capability sits in config space. */
  readonly capabilities: CapabilityOffsets = { vendor: [], vendorExt: [] };
  /** The MSI-X table/PBA placement, if the device has MSI-X. */
  readonly msixLayout: MsixLayout | undefined;

  private readonly options: PciDeviceOptions;
  private readonly bars: (BarRegion | undefined)[];
  private readonly rom: Uint8Array | undefined;
  private readonly msix: MsixTable | undefined;
  private port: ClientPort | undefined;
  private resetting: Promise<void> | undefined;
  private closed = false;

  constructor(options: PciDeviceOptions) {
    this.options = options;
    this.name = options.name;
    this.log = (options.log ?? defaultLogger()).child({ device: options.name });
    const ints = options.interrupts ?? {};
    const intxPin: IntxPin | undefined = ints.intx === true ? 'A' : ints.intx === false ? undefined : ints.intx;
    this.irq = new Interrupts(
      {
        intx: intxPin ? 1 : 0,
        msi: ints.msi?.vectors ?? 0,
        msix: ints.msix?.vectors ?? 0,
        err: (ints.err ?? true) ? 1 : 0,
        req: ints.req ? 1 : 0,
      },
      this.log,
    );
    this.dma = new DmaSpace(this.log, { unsealedFds: options.unsealedDmaFds ?? 'map' });

    const layout = layoutBars(options.bars ?? [], ints.msix);
    this.msixLayout = layout.msix;
    this.msix = layout.msix ? new MsixTable(layout.msix, this.irq) : undefined;
    const express: ExpressOptions | undefined = options.express === true ? {} : options.express || undefined;
    this.config = new ConfigSpace(express ? CONFIG_SIZE_EXPRESS : CONFIG_SIZE_PCI);
    if (options.rom) {
      // QEMU reads the ROM in one REGION_READ, bounded by max_data_xfer_size.
      if (options.rom.length > Limits.MAX_DATA_XFER_SIZE)
        throw new Error(`PciDevice: ROM larger than ${Limits.MAX_DATA_XFER_SIZE} bytes`);
      this.rom = new Uint8Array(nextPowerOfTwo(Math.max(options.rom.length, 2048)));
      this.rom.set(options.rom);
    }
    buildHeader(this.config, {
      id: options.id,
      bars: layout.bars,
      romSize: this.rom?.length ?? 0,
      intxPin,
      express: express !== undefined,
    });
    this.buildCapabilities(express);
    this.config.onWrite(Cfg.COMMAND, 2, () => {
      this.irq.setIntxDisabled((this.config.u16(Cfg.COMMAND) & PciCommand.INTX_DISABLE) !== 0);
    });
    this.irq.onIntxState = (asserted) => {
      const status = this.config.u16(Cfg.STATUS);
      this.config.setU16(Cfg.STATUS, asserted ? status | PciStatus.INTERRUPT : status & ~PciStatus.INTERRUPT);
    };
    this.config.seal();

    this.bars = [];
    const limiter = new LogLimiter(this.log);
    try {
      for (const bar of layout.bars)
        this.bars.push(bar ? new BarRegion(bar, this.msix, this.log, this.name, limiter) : undefined);
    } catch (err) {
      for (const b of this.bars) b?.close();
      throw err;
    }
  }

  private buildCapabilities(express: ExpressOptions | undefined): void {
    const ints = this.options.interrupts ?? {};
    const std: { key: 'pm' | 'msi' | 'msix' | 'express' | 'vendor'; cap: Capability }[] = [];
    const ext: { key: 'dsn' | 'vendorExt'; cap: ExtendedCapability }[] = [];
    for (const c of this.options.capabilities ?? []) {
      if (c.kind === 'pm') std.push({ key: 'pm', cap: powerManagementCapability() });
    }
    if (ints.msi) std.push({ key: 'msi', cap: msiCapability(ints.msi) });
    if (this.msixLayout) std.push({ key: 'msix', cap: msixCapability(this.msixLayout) });
    if (express)
      std.push({
        key: 'express',
        cap: expressCapability(express, () => void this.startReset('flr').catch(() => undefined)),
      });
    for (const c of this.options.capabilities ?? []) {
      if (c.kind === 'vendor') std.push({ key: 'vendor', cap: vendorCapability(c.data, c.writable, c.onWrite) });
      else if (c.kind === 'dsn') ext.push({ key: 'dsn', cap: serialNumberCapability(c.serial) });
      else if (c.kind === 'vendor-ext')
        ext.push({ key: 'vendorExt', cap: vendorExtendedCapability(c.id, c.revision ?? 0, c.data) });
    }
    const offsets = placeCapabilities(
      this.config,
      std.map((s) => s.cap),
    );
    std.forEach((s, i) => {
      if (s.key === 'vendor') this.capabilities.vendor.push(offsets[i]!);
      else this.capabilities[s.key] = offsets[i]!;
    });
    const extOffsets = placeExtendedCapabilities(
      this.config,
      ext.map((e) => e.cap),
    );
    ext.forEach((e, i) => {
      if (e.key === 'vendorExt') this.capabilities.vendorExt.push(extOffsets[i]!);
      else this.capabilities.dsn = extOffsets[i]!;
    });
  }

  /**
   * The shared bytes of a memory-backed BAR (the client maps the same memfd).
   * Throws if the BAR has no memory areas.
   */
  barMemory(index: number): Uint8Array {
    const mem = this.bars[index]?.memory;
    if (!mem) throw new Error(`PciDevice ${this.name}: BAR ${index} is not memory-backed`);
    return mem;
  }

  /** COMMAND.MASTER: the guest allowed the device to do DMA. */
  get busMasterEnabled(): boolean {
    return (this.config.u16(Cfg.COMMAND) & PciCommand.MASTER) !== 0;
  }

  /** COMMAND.MEMORY / COMMAND.IO decoding as the guest set it. */
  get command(): number {
    return this.config.u16(Cfg.COMMAND);
  }

  /** Whether a client is attached. */
  get attached(): boolean {
    return this.port !== undefined;
  }

  // ---- Endpoint ----

  regionInfo(index: number): RegionDescription {
    if (index >= PciRegion.BAR0 && index <= PciRegion.BAR5) {
      return this.bars[index]?.info() ?? { flags: 0, size: 0n, offset: 0n };
    }
    if (index === PciRegion.ROM) {
      return this.rom
        ? { flags: RegionFlag.READ, size: BigInt(this.rom.length), offset: 0n }
        : { flags: 0, size: 0n, offset: 0n };
    }
    if (index === PciRegion.CONFIG)
      return { flags: RegionFlag.READ | RegionFlag.WRITE, size: BigInt(this.config.size), offset: 0n };
    if (index === PciRegion.VGA) return { flags: 0, size: 0n, offset: 0n };
    throw VfioUserError.invalid(`no region ${index}`);
  }

  irqInfo(index: number): IrqInfo {
    return this.irq.info(index);
  }

  regionRead(index: number, offset: bigint, count: number): Uint8Array | Promise<Uint8Array> {
    if (this.resetting) return this.resetting.then(() => this.doRead(index, Number(offset), count));
    return this.doRead(index, Number(offset), count);
  }

  regionWrite(index: number, offset: bigint, data: Uint8Array): void | Promise<void> {
    if (this.resetting) return this.resetting.then(() => this.doWrite(index, Number(offset), data));
    return this.doWrite(index, Number(offset), data);
  }

  // The connection has checked every access against regionInfo() (size and
  // READ/WRITE flag): the device does not check ranges again.
  private doRead(index: number, offset: number, count: number): Uint8Array | Promise<Uint8Array> {
    if (index === PciRegion.CONFIG) {
      this.refreshMsiPending();
      const bytes = this.config.read(offset, count);
      if (this.log.isLevelEnabled('trace'))
        this.log.trace({ offset, data: Buffer.from(bytes.subarray(0, 64)).toString('hex') }, 'config read');
      return bytes;
    }
    if (index === PciRegion.ROM) return this.rom ? this.rom.slice(offset, offset + count) : new Uint8Array(0);
    const bar = index >= 0 && index <= 5 ? this.bars[index] : undefined;
    return bar ? bar.read(offset, count) : new Uint8Array(0);
  }

  private doWrite(index: number, offset: number, data: Uint8Array): void | Promise<void> {
    if (index === PciRegion.CONFIG) {
      if (this.log.isLevelEnabled('trace'))
        this.log.trace({ offset, data: Buffer.from(data.subarray(0, 64)).toString('hex') }, 'config write');
      return this.config.write(offset, data);
    }
    const bar = index >= 0 && index <= 5 ? this.bars[index] : undefined;
    return bar?.write(offset, data);
  }

  /** MSI pending bits in config space mirror dev.irq (read-only register). */
  private refreshMsiPending(): void {
    const msi = this.options.interrupts?.msi;
    const at = this.capabilities.msi;
    if (!msi || at === undefined) return;
    const regs = msiRegisters(msi);
    if (regs.pending === undefined) return;
    let bits = 0;
    for (let v = 0; v < msi.vectors; v++) if (this.irq.isPending(PciIrq.MSI, v)) bits |= 1 << v;
    this.config.setU32(at + regs.pending, bits >>> 0);
  }

  setIrqs(request: SetIrqsRequest, fds: number[]): void {
    this.irq.set(request, fds);
  }

  dmaMap(request: DmaMapRequest): void | Promise<void> {
    return this.dma.map(request);
  }

  dmaUnmap(addr: bigint, size: bigint, all: boolean): void | Promise<void> {
    return this.dma.unmap(addr, size, all);
  }

  reset(reason: ResetReason): Promise<void> {
    return this.startReset(reason);
  }

  /**
   * Serialize resets; accesses that arrive meanwhile wait for the last one.
   * `this.resetting` never rejects (a failed reset is logged and does not
   * block later accesses or resets); the returned promise does.
   */
  private startReset(reason: ResetReason): Promise<void> {
    const previous = this.resetting ?? Promise.resolve();
    const run = previous.then(() => this.runReset(reason));
    const settled: Promise<void> = run.then(
      () => {
        if (this.resetting === settled) this.resetting = undefined;
      },
      (err: unknown) => {
        if (this.resetting === settled) this.resetting = undefined;
        this.log.error({ err, reason }, 'device reset failed');
      },
    );
    this.resetting = settled;
    return run;
  }

  private async runReset(reason: ResetReason): Promise<void> {
    this.log.info({ reason }, 'reset');
    await this.options.quiesce?.();
    if (reason === 'client' || reason === 'flr') {
      this.config.reset();
      this.msix?.reset();
      this.irq.resetState();
    }
    await this.options.onReset?.(reason);
  }

  attach(port: ClientPort): void {
    this.port = port;
    this.dma.attach(port);
    this.log.info('client attached');
  }

  async detach(): Promise<void> {
    this.port = undefined;
    try {
      await this.dma.detach();
    } finally {
      this.irq.closeAll();
      await this.startReset('lost-connection');
      this.log.info('client detached');
    }
  }

  /** Release memfds, BAR and DMA mappings, and eventfds (after the server stopped). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.irq.closeAll();
    void this.dma.detach().catch((err: unknown) => this.log.warn({ err }, 'DMA cleanup on close failed'));
    for (const bar of this.bars) bar?.close();
  }
}
