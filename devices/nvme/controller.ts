/**
 * NvmeController: an NVMe 1.4 controller (PCI class 01/08/02) backed by raw
 * files or memory, served over vfio-user as a PciDevice.
 *
 * ```ts
 * const nvme = new NvmeController({
 *   name: 'nvme0',
 *   namespaces: [{ path: '/var/lib/disk0.img', size: 1 << 30, lbaSize: 512 }],
 *   serial: 'VFIOUSER0001', model: 'vfio-user-ts NVMe', firmware: '1.0',
 *   queues: 4,
 * });
 * const server = await serve(nvme.device, { socketPath: '/run/nvme0.sock' });
 * ...
 * await server.close();
 * await nvme.close(); // flushes
 * ```
 *
 * `nvme.device` is the PciDevice (the Endpoint to serve); `nvme.endpoint` is
 * the same object, so the controller can be returned from a daemon device
 * factory as a HostedDevice ({ endpoint, close }).
 *
 * PCI layout: BAR0 (64-bit, 16 KiB) holds the NVMe registers and doorbells
 * (stride 4); BAR4 holds the MSI-X table and PBA (one vector per queue:
 * `queues + 1`); INTx pin A as fallback; PM and PCIe (FLR) capabilities.
 */
import {
  PciDevice,
  silentLogger,
  type DeviceMetrics,
  type DmaSpace,
  type Logger,
  type UnsealedFdPolicy,
} from 'vfio-user-ts';
import { BAR0_SIZE } from './constants.js';
import { ControllerCore, type DoorbellStats } from './core.js';
import { NvmeMetrics } from './metrics.js';
import type { NvmeDma, NvmeHost } from './host.js';
import { Namespace, type NamespaceOptions } from './namespace.js';
import { DEFAULT_SQ_POLL } from './sq-poller.js';
import { nvmeDeviceState } from './state.js';

export type { NamespaceOptions } from './namespace.js';

export interface NvmeControllerOptions {
  /** Device name (logs). */
  name: string;
  /** At least one; namespace ids are 1, 2, ... in this order. */
  namespaces: NamespaceOptions[];
  /** Identify serial number (<= 20 ASCII chars). Default derived from the name. */
  serial?: string;
  /** Identify model number (<= 40 chars). Default 'vfio-user-ts NVMe'. */
  model?: string;
  /** Firmware revision (<= 8 chars). Default '1.0'. */
  firmware?: string;
  /** Most I/O queue pairs (1-64). Default 8. The guest asks for one per CPU. */
  queues?: number;
  /**
   * Poll shadow SQ tails for up to this many microseconds after the
   * controller falls idle instead of taking a doorbell message per command
   * (see sq-poller.ts; the window adapts to the guest's pace): lower
   * latency, for a busy event loop while I/O flows. Default 2000; 0 turns
   * polling off.
   */
  pollMicros?: number;
  /** DMA_MAP fds not sealed against shrinking: 'map' (default), 'messages' or 'refuse' (PciDeviceOptions.unsealedDmaFds). */
  unsealedDmaFds?: UnsealedFdPolicy;
  /**
   * Fit the polling window to the guest's pace and stop polling while the
   * host has no CPU to spare (default true); false always watches the whole
   * pollMicros, however busy the host (tests, benchmarks).
   */
  pollAdaptive?: boolean;
  /**
   * Measure each command's time inside the controller (fetch to completion)
   * for timing() (benchmarks). Default false: no clock is read per command.
   */
  timing?: boolean;
  /**
   * The longest a controller reset (CC.EN 1 -> 0, DEVICE_RESET, FLR, client
   * disconnect) or shutdown (CC.SHN) waits for commands still running, in
   * ms (100-4000, default 2000). Only the host's own work can take that
   * long (file I/O, unanswered DMA messages): past it the reset is done
   * without them and reports Controller Fatal Status (docs/nvme.md, "What a
   * hostile guest can and cannot do"). `close()` waits as long.
   */
  resetTimeoutMs?: number;
  /**
   * Count commands, bytes and latency per queue (devices/nvme/metrics.ts), and
   * how submissions arrived (doorbell messages or polling). The daemon passes
   * the device's metrics when it runs with --metrics. Default: none (no cost).
   */
  metrics?: DeviceMetrics;
  /** PCI vendor/device ids. Default Nutanix's 0x4e58:0x0001, as SPDK's vfio-user NVMe target. */
  vendor?: number;
  device?: number;
  log?: Logger | undefined;
}

/** NvmeDma over the PciDevice's DmaSpace: views where fd-backed, messages elsewhere. */
function dmaAdapter(dma: DmaSpace): NvmeDma {
  return {
    view(addr, length, access = 'readwrite') {
      const r = dma.find(addr);
      if (!r) throw new Error(`guest address 0x${addr.toString(16)} is not mapped`);
      if (!r.mapping || addr + BigInt(length) > r.end) return undefined;
      try {
        return dma.view(addr, length, access);
      } catch {
        return undefined; // read-only region or a 4 GiB window crossing: read()/write() decide
      }
    },
    read: (addr, length) => dma.read(addr, length),
    write: (addr, data) => dma.write(addr, data),
    // A DmaPin is the PinnedViews the commands release, pinned read-write
    // unless the command only reads guest memory (a Write: its pages are not
    // dirtied). Undefined means "copy instead": unmapped or read-only memory
    // then fails (or not) on the copy path, which gives the command its status.
    pin: (ranges, access = 'readwrite') => dma.pin(ranges, access),
    markDirty: (addr, length) => dma.markDirty(addr, length),
  };
}

/** Default NvmeControllerOptions.resetTimeoutMs. */
const DEFAULT_RESET_TIMEOUT_MS = 2000;

/**
 * What the PCI layer allows a reset beyond the controller's own bound: the
 * controller always answers first (with CFS if it had to give up), the PCI
 * layer's bound (PciDeviceOptions.resetTimeoutMs) is only a backstop.
 */
const PCI_RESET_MARGIN_MS = 1000;

export class NvmeController {
  /** The PCI function to serve. */
  readonly device: PciDevice;
  readonly namespaces: readonly Namespace[];
  readonly log: Logger;
  private readonly core: ControllerCore;
  private readonly resetTimeoutMs: number;
  private closed = false;

  constructor(options: NvmeControllerOptions) {
    if (options.namespaces.length === 0) throw new RangeError('nvme: at least one namespace');
    const queues = options.queues ?? 8;
    if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new RangeError('nvme: queues must be 1-64');
    const pollMicros = options.pollMicros ?? DEFAULT_SQ_POLL.idleMicros;
    if (!Number.isInteger(pollMicros) || pollMicros < 0 || pollMicros > 1_000_000)
      throw new RangeError('nvme: pollMicros must be a whole number from 0 to 1000000');
    const resetTimeoutMs = options.resetTimeoutMs ?? DEFAULT_RESET_TIMEOUT_MS;
    if (!Number.isInteger(resetTimeoutMs) || resetTimeoutMs < 100 || resetTimeoutMs > 4000)
      throw new RangeError('nvme: resetTimeoutMs must be a whole number from 100 to 4000');
    this.resetTimeoutMs = resetTimeoutMs;
    this.log = (options.log ?? silentLogger).child({ nvme: options.name });
    const serial = (options.serial ?? `VFUTS-${options.name}`).slice(0, 20);
    const opened: Namespace[] = [];
    try {
      options.namespaces.forEach((ns, i) => opened.push(new Namespace(i + 1, ns, serial)));
    } catch (err) {
      for (const ns of opened) void ns.close();
      throw err;
    }
    this.namespaces = opened;
    const vectors = queues + 1;
    const vendor = options.vendor ?? 0x4e58;
    // The core needs the device (for DMA and IRQs) and the device's BAR handlers need the core.
    let core: ControllerCore | undefined;
    this.device = new PciDevice({
      name: options.name,
      id: { vendor, device: options.device ?? 0x0001, classCode: 0x010802, revision: 0 },
      bars: [
        {
          index: 0,
          size: BAR0_SIZE,
          type: 'mem64',
          read: (offset, size) => core!.readRegister(offset, size),
          write: (offset, size, value) => core!.writeRegister(offset, size, value),
        },
      ],
      interrupts: { intx: true, msix: { vectors, bar: 4 } },
      capabilities: [{ kind: 'pm' }],
      express: { flr: true },
      // Held for a saved state (migration, hot reload): nothing fetched, fetched commands complete
      // (state.ts). Before a reset nothing: the reset drops the queues first, then waits (bounded).
      quiesce: (reason) => (reason === 'hold' ? core!.hold() : undefined),
      resume: () => core!.release(),
      onReset: () => core!.reset(),
      state: nvmeDeviceState(
        {
          snapshot: () => core!.snapshot(),
          settled: () => core!.settled(),
          restore: (s) => core!.restore(s),
        },
        { maxIoQueues: queues, vectors, namespaces: opened },
      ),
      resetTimeoutMs: resetTimeoutMs + PCI_RESET_MARGIN_MS,
      log: options.log,
      ...(options.unsealedDmaFds && { unsealedDmaFds: options.unsealedDmaFds }),
    });
    const device = this.device;
    const host: NvmeHost = {
      dma: dmaAdapter(device.dma),
      msixEnabled: () => device.irq.mode === 'msix',
      interrupt: (vector) => {
        device.irq.trigger(device.irq.mode === 'msix' ? vector : 0);
      },
      onBusMasterChange: (listener) => void device.dma.onBusMasterChange(listener),
    };
    core = new ControllerCore(host, {
      identity: {
        vendor,
        subsystemVendor: vendor,
        serial,
        model: (options.model ?? 'vfio-user-ts NVMe').slice(0, 40),
        firmware: (options.firmware ?? '1.0').slice(0, 8),
        cntlid: 1,
      },
      namespaces: opened,
      maxIoQueues: queues,
      vectors,
      log: this.log,
      poll: { ...DEFAULT_SQ_POLL, idleMicros: pollMicros, adaptive: options.pollAdaptive ?? true },
      timing: options.timing ?? false,
      resetTimeoutMs,
      metrics: options.metrics?.enabled
        ? new NvmeMetrics(options.metrics, (nsid) => opened[nsid - 1]?.lbaSize)
        : undefined,
    });
    this.core = core;
    if (options.metrics?.enabled) this.collectDoorbellStats(options.metrics);
  }

  /** Doorbells by how they arrived, from doorbellStats() at every scrape. */
  private collectDoorbellStats(metrics: DeviceMetrics): void {
    const doorbells = metrics.counter(
      'vfio_user_nvme_doorbells_total',
      'Doorbell updates the controller took, by how: mmio (a register write, one vfio-user message each) or poll (a shadow doorbell found by polling)',
      ['via'],
    );
    const mmio = doorbells.labels('mmio');
    const poll = doorbells.labels('poll');
    let seen = { mmio: 0, polled: 0 };
    metrics.onCollect(() => {
      const now = this.core.doorbellStats();
      mmio.inc(now.mmio - seen.mmio);
      poll.inc(now.polled - seen.polled);
      seen = now;
    });
  }

  /** Same as `device` (lets the controller be a daemon HostedDevice). */
  get endpoint(): PciDevice {
    return this.device;
  }

  /** Commands fetched per submission queue since it was created (qid 0 = admin). */
  queueStats(): { sqid: number; fetched: number }[] {
    return this.core.queueStats();
  }

  /**
   * How submissions reached the controller: MMIO doorbell writes (vfio-user
   * messages) and shadow tails found by polling; `rearmed` counts the times
   * polling went idle and asked for doorbell writes again; `backedOff` the
   * watches skipped or cut short because the host had no CPU to spare
   * (poll-backoff.ts).
   */
  doorbellStats(): DoorbellStats {
    return this.core.doorbellStats();
  }

  /**
   * Commands completed and their mean time inside the controller (fetch to
   * completion), in microseconds; undefined unless the controller was made
   * with `timing: true`.
   */
  timing(): { commands: number; meanMicros: number } | undefined {
    return this.core.timing?.summary();
  }

  /** Commands running now (fetched, not finished): 0 once the device is quiesced for a saved state. */
  get inflight(): number {
    return this.core.inflight;
  }

  /** Make every completed write durable. */
  flush(): Promise<void> {
    return this.core.flushAll();
  }

  /**
   * Wait for running commands (at most resetTimeoutMs: what still runs then
   * is stuck on a DMA message or the host's file I/O, and its completion is
   * of no use any more), flush and close the backing files (each waits for
   * its own file operations in progress: they must not outlive the fd),
   * release the device. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const quiet = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), this.resetTimeoutMs);
      void this.core.quiesceIo().then(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!quiet)
      this.log.warn(
        { running: this.core.inflight },
        'nvme: closing with commands still running (their completions are dropped)',
      );
    await Promise.all(this.namespaces.map((ns) => ns.close()));
    this.device.close();
  }
}
