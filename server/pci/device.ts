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
import { DeviceMigration } from '../migration/device-migration.js';
import {
  decodeDeviceSection,
  defineDeviceState,
  deviceSectionMaxBytes,
  saveDeviceSection,
} from '../state/device-state.js';
import { decodeEnvelope, encodeEnvelope, envelopeSize } from '../state/envelope.js';
import { decodeField, encodeField, StateError } from '../state/fields.js';
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
import { Errno, Limits, PciIrq, PciRegion, RegionFlag } from '../../protocol/constants.js';
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
import {
  barMemorySectionMaxBytes,
  PCI_SECTION_MAX_BYTES,
  prepareBarMemorySection,
  preparePciSection,
  saveBarMemorySection,
  savePciSection,
  type PciStateParts,
} from './pci-state.js';
import type { ExpressOptions, IntxPin, PciDeviceOptions } from './types.js';

/** Section tags of a PciDevice's saved state (server/state/envelope.ts). */
const STATE_TAGS = ['PCI ', 'BARM', 'DEV '] as const;

const CONFIG_SIZE_PCI = 256;
const CONFIG_SIZE_EXPRESS = 4096;

/**
 * How long a reset may take (PciDeviceOptions.resetTimeoutMs): well under
 * QEMU's 5 s wait for any reply (x-msg-timeout), so a DEVICE_RESET or the
 * config reads after an FLR are answered before QEMU gives up.
 */
export const DEFAULT_RESET_TIMEOUT_MS = 3000;

/** `promise`, or a rejection with `onTimeout()` after `ms` (the promise itself runs on). */
function within<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

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
  /**
   * Migration v2 (the Endpoint's): present when the device declares a
   * `state` or a `migrationStream`. `dev.migration.state` is the current
   * MigrationState.
   */
  readonly migration: DeviceMigration | undefined;

  private readonly options: PciDeviceOptions;
  /** Lines the client decides the rate of (attach, detach, reset): rate-limited. */
  private readonly limiter: LogLimiter;
  private readonly bars: (BarRegion | undefined)[];
  private readonly rom: Uint8Array | undefined;
  private readonly msix: MsixTable | undefined;
  private port: ClientPort | undefined;
  private resetting: Promise<void> | undefined;
  private closed = false;
  private readonly resetTimeoutMs: number;
  /** quiesce() completed and resume() has not run since. */
  private isQuiesced = false;

  constructor(options: PciDeviceOptions) {
    this.options = options;
    this.name = options.name;
    this.log = (options.log ?? defaultLogger()).child({ device: options.name });
    this.limiter = new LogLimiter(this.log);
    this.resetTimeoutMs = options.resetTimeoutMs ?? DEFAULT_RESET_TIMEOUT_MS;
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
    const express: ExpressOptions | undefined =
      options.express === true ? {} : options.express === false ? undefined : options.express;
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
    this.config.onWrite(Cfg.COMMAND, 2, () => this.followCommand());
    this.irq.onIntxState = (asserted) => {
      const status = this.config.u16(Cfg.STATUS);
      this.config.setU16(Cfg.STATUS, asserted ? status | PciStatus.INTERRUPT : status & ~PciStatus.INTERRUPT);
    };
    this.config.seal();
    this.followCommand(); // power-on: Command 0, so no bus mastering until the guest's driver sets it

    this.bars = [];
    const limiter = new LogLimiter(this.log);
    try {
      for (const bar of layout.bars)
        this.bars.push(bar ? new BarRegion(bar, this.msix, this.log, this.name, limiter) : undefined);
    } catch (err) {
      for (const b of this.bars) b?.close();
      throw err;
    }
    if (options.state) defineDeviceState(options.state);
    this.migration =
      options.state !== undefined || options.migrationStream !== undefined
        ? new DeviceMigration(this, options.migrationStream)
        : undefined;
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

  /**
   * COMMAND.MASTER: the guest allowed the device to do DMA. While it is
   * clear, `dma` refuses every access (BusMasterDisabledError) and `irq`
   * drops MSI/MSI-X messages; `dma.onBusMasterChange` tells the device.
   */
  get busMasterEnabled(): boolean {
    return (this.config.u16(Cfg.COMMAND) & PciCommand.MASTER) !== 0;
  }

  /** The Command register changed (a guest write, or a reset): INTx disable and bus mastering follow it. */
  private followCommand(): void {
    const command = this.config.u16(Cfg.COMMAND);
    this.irq.setIntxDisabled((command & PciCommand.INTX_DISABLE) !== 0);
    const master = (command & PciCommand.MASTER) !== 0;
    this.irq.busMaster = master;
    this.dma.setBusMaster(master);
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
   * Serialize resets; accesses that arrive meanwhile wait for the last one,
   * never longer than resetTimeoutMs from when it was asked for: a device
   * whose quiesce or onReset does not finish in time is logged (rate-limited)
   * and left to finish on its own, and the returned promise rejects
   * (ETIMEDOUT: a DEVICE_RESET gets an error reply instead of none). Each
   * reset waits for the previous one, which is bounded the same way.
   * `this.resetting` never rejects (a failed reset is logged and does not
   * block later accesses or resets); the returned promise does.
   */
  private startReset(reason: ResetReason): Promise<void> {
    const previous = this.resetting ?? Promise.resolve();
    const bounded = within(
      previous.then(() => this.runReset(reason)),
      this.resetTimeoutMs,
      () => new VfioUserError(Errno.ETIMEDOUT, `reset (${reason}) did not finish within ${this.resetTimeoutMs} ms`),
    );
    const settled: Promise<void> = bounded.then(
      () => {
        if (this.resetting === settled) this.resetting = undefined;
      },
      (err: unknown) => {
        if (this.resetting === settled) this.resetting = undefined;
        this.limiter.error(
          'reset-failed',
          { err, reason },
          'device reset failed or did not finish in time: accesses go on without it',
        );
      },
    );
    this.resetting = settled;
    return bounded;
  }

  private async runReset(reason: ResetReason): Promise<void> {
    this.limiter.info('reset', { reason }, 'reset');
    // Already held (a migration stopped it, or dev.quiesce()): its quiesce ran. Otherwise
    // quiesce it now, without the DMA and interrupt freeze: a reset is not a saved state.
    const held = this.isQuiesced;
    if (!held) await this.options.quiesce?.('reset');
    try {
      if (reason === 'client' || reason === 'flr') {
        this.config.reset();
        this.followCommand();
        this.msix?.reset();
        this.irq.resetState();
      }
      await this.options.onReset?.(reason);
    } finally {
      // A reset ends any migration state (libvfio-user: back to RUNNING) and the device runs again.
      this.migration?.afterReset();
      if (reason !== 'shutdown') {
        if (held) await this.resume();
        else await this.options.resume?.();
      }
    }
  }

  // ---- state: quiesce, save, load, resume ----

  /** Whether the device is quiesced (by `quiesce()`, a migration stop or a reset in progress). */
  get quiesced(): boolean {
    return this.isQuiesced;
  }

  /**
   * Quiesce the device (its `quiesce` option), then hold back DMA (refused
   * with EBUSY) and interrupts (they pend) until `resume()`. Idempotent. What
   * a migration does on stopping the device, and what a hot reload or a live
   * upgrade does before `saveState()`.
   */
  async quiesce(): Promise<void> {
    if (this.isQuiesced) return;
    await this.options.quiesce?.('hold');
    this.dma.freeze();
    this.irq.freeze();
    this.isQuiesced = true;
  }

  /**
   * Let the device run again: pending interrupts fire, DMA works, then its
   * `resume` option runs (if that throws, the device stays quiesced and the
   * error is passed on). Idempotent.
   */
  async resume(): Promise<void> {
    if (!this.isQuiesced) return;
    this.isQuiesced = false;
    this.dma.thaw();
    this.irq.thaw();
    try {
      await this.options.resume?.();
    } catch (err) {
      // The device could not start again: keep it held (a later resume, or a reset, tries again).
      this.dma.freeze();
      this.irq.freeze();
      this.isQuiesced = true;
      throw err;
    }
  }

  /**
   * Exchange what belongs to the client with `other` (DeviceServer.replaceDevice
   * hands it to the next generation of a reloaded device): DMA mappings,
   * interrupt eventfds and the memfds behind memory-backed BARs, which the
   * client mmapped and keeps using. Calling it again undoes it. Both devices
   * must be quiesced, with the same BAR layout and interrupt vectors (what
   * loadState checks); otherwise it throws before anything moves.
   */
  exchangeClientResources(other: PciDevice): void {
    if (!this.isQuiesced || !other.isQuiesced)
      throw new Error(`PciDevice ${this.name}: client resources move only between quiesced devices`);
    for (let i = 0; i < 6; i++) {
      const mine = this.bars[i];
      const theirs = other.bars[i];
      if ((mine === undefined) !== (theirs === undefined) || (mine && theirs && !mine.sameBacking(theirs)))
        throw new Error(`PciDevice ${this.name}: BAR ${i} differs from ${other.name}'s`);
    }
    if (JSON.stringify(this.irq.counts) !== JSON.stringify(other.irq.counts))
      throw new Error(`PciDevice ${this.name}: interrupt vectors differ from ${other.name}'s`);
    this.dma.exchangeMappings(other.dma);
    this.irq.exchangeEventfds(other.irq);
    this.bars.forEach((bar, i) => bar?.exchangeBacking(other.bars[i]!));
  }

  /** Resolves when no reset is running. */
  whenIdle(): Promise<void> {
    return this.resetting ?? Promise.resolve();
  }

  private stateParts(): PciStateParts {
    const saveBars = this.options.saveBarMemory ?? true;
    return {
      config: this.config,
      msix: this.msix,
      irq: this.irq,
      barMemory: saveBars ? this.bars.flatMap((b) => (b?.memory ? [{ index: b.index, bytes: b.memory }] : [])) : [],
      afterConfigRestore: () => this.afterConfigRestore(),
    };
  }

  /** What the config-space write hooks derive, for restored bytes (no hook runs on a restore). */
  private afterConfigRestore(): void {
    // INTx disable and Bus Master Enable follow the restored Command register: a
    // device starts with bus mastering off, and a guest that had turned it on
    // does not write it again after a migration or a reload.
    this.followCommand();
    const msi = this.options.interrupts?.msi;
    const at = this.capabilities.msi;
    if (msi && at !== undefined) {
      const control = at + msiRegisters(msi).control;
      const c = this.config.u16(control);
      const capable = (c >> 1) & 7;
      if (((c >> 4) & 7) > capable) this.config.setU16(control, (c & ~0x70) | (capable << 4));
    }
  }

  /** The largest saved state `loadState` accepts from this device's layout and DeviceState. */
  get maxStateBytes(): number {
    const parts = this.stateParts();
    const sizes = [PCI_SECTION_MAX_BYTES, barMemorySectionMaxBytes(parts)];
    if (this.options.state) sizes.push(deviceSectionMaxBytes(this.options.state));
    return envelopeSize(sizes);
  }

  /**
   * The device's whole state as bytes (the envelope of server/state/envelope.ts):
   * what the library owns (config space, MSI-X table, interrupt state, BAR
   * memory) and the DeviceState's `save()`. The device must be quiesced
   * (`await dev.quiesce()`); DMA mappings and eventfds are the client's and
   * not included. Portable across Node versions and processes.
   */
  async saveState(): Promise<Uint8Array> {
    if (!this.isQuiesced)
      throw new Error(`PciDevice ${this.name}: saveState() needs a quiesced device (await quiesce() first)`);
    const parts = this.stateParts();
    const sections: [string, Uint8Array][] = [['PCI ', savePciSection(parts)]];
    const bars = saveBarMemorySection(parts);
    if (bars) sections.push(['BARM', bars]);
    if (this.options.state) sections.push(['DEV ', await saveDeviceSection(this.options.state)]);
    return encodeEnvelope(sections);
  }

  /**
   * Take a state saved by `saveState()` (here or in another process, by this
   * version of the device or an older one its DeviceState still reads). All
   * or nothing: everything is checked before anything changes, and if the
   * device's `load()` refuses, what it had is restored. Rejects with a
   * StateError (errno EINVAL) naming the problem: another format, another
   * device kind or layout, a version this module does not read (both
   * versions named), malformed or oversized bytes. The device must be
   * quiesced; `resume()` it afterwards.
   */
  async loadState(bytes: Uint8Array): Promise<void> {
    if (!this.isQuiesced)
      throw new Error(`PciDevice ${this.name}: loadState() needs a quiesced device (await quiesce() first)`);
    const sections = decodeEnvelope(bytes, STATE_TAGS, this.maxStateBytes);
    const parts = this.stateParts();
    const pci = sections.get('PCI ');
    if (!pci) throw new StateError('state: no PCI section');
    const applyPci = preparePciSection(parts, pci);
    const applyBars = prepareBarMemorySection(parts, sections.get('BARM'));
    const def = this.options.state;
    const dev = sections.get('DEV ');
    if (!def && dev) throw new StateError(`state: carries a device's state, ${this.name} declares no DeviceState`);
    if (def && !dev)
      throw new StateError(`state: carries no device state, ${this.name} needs one of kind '${def.kind}'`);
    const value = def && dev ? decodeDeviceSection(def, dev) : undefined;
    // What to go back to if the device refuses its part.
    const undoPci = preparePciSection(parts, savePciSection(parts));
    const undoBars = prepareBarMemorySection(parts, saveBarMemorySection(parts));
    const before = def ? decodeField(def.schema, encodeField(def.schema, await def.save())) : undefined;
    applyPci();
    applyBars();
    if (def) {
      try {
        await def.load(value);
      } catch (err) {
        undoPci();
        undoBars();
        try {
          await def.load(before);
        } catch (again) {
          this.log.error(
            { err: again },
            'state: the device refused its own previous state while undoing a failed load',
          );
        }
        if (err instanceof VfioUserError) throw err;
        throw new StateError(
          `state of '${def.kind}': the device refused it: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    this.log.info({ bytes: bytes.byteLength, kind: def?.kind, version: def?.version }, 'state loaded');
  }

  attach(port: ClientPort): void {
    this.port = port;
    this.dma.attach(port);
    this.limiter.info('client-attached', {}, 'client attached');
  }

  /**
   * The client is gone: its memory (out of the lookup at once: the device's
   * accesses fail from now on) and eventfds go, and the device resets.
   * Bounded like a reset: memory the device still uses (a pinned range
   * under file I/O the host has not finished) is unmapped once released,
   * without holding up the next client.
   */
  async detach(): Promise<void> {
    this.port = undefined;
    const unmapped = this.dma.detach();
    this.irq.closeAll();
    const reset = this.startReset('lost-connection');
    const [unmap] = await Promise.allSettled([
      within(unmapped, this.resetTimeoutMs, () => new Error('guest memory still in use')),
      reset, // bounded, and its failure logged, by startReset
    ]);
    if (unmap.status === 'rejected')
      this.limiter.warn(
        'detach-busy',
        { err: unmap.reason as unknown },
        'guest memory still in use by the device: it is unmapped once released',
      );
    this.limiter.info('detach', {}, 'client detached');
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
