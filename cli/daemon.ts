/**
 * The daemon: many independent devices in one process, each served on its own
 * socket (one client at a time; a client leaving resets the device and the
 * socket takes the next one — server/server.ts does that).
 *
 * Lifecycle: `prepare(config)` loads device modules and checks their options
 * (ConfigErrors, before anything starts); `check()` (for --check) builds every
 * device and closes it again; `start()` builds and serves every device, and
 * rejects on the first failure (a DeviceStartError; then call stop());
 * `stop()` closes every socket (dropping clients, which detaches them: DMA
 * unmapped, eventfds closed), then closes the devices (NVMe flushes), in
 * parallel across devices.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { native } from '../native/index.js';
import { serve, type DeviceServer } from '../server/server.js';
import type { ConnectionObserver } from '../server/connection/index.js';
import { NO_METRICS, noMetrics, type MetricsRegistry } from '../server/metrics/index.js';
import { builtinFactory } from './builtin-devices.js';
import type { DaemonConfig, DeviceSpec } from './config.js';
import { ConfigError, ConfigErrors } from './config-error.js';
import type { DeviceContext, DeviceFactory, HostedDevice } from '../server/device-module.js';
import { asHostedDevice, loadDeviceModule } from './device-module.js';
import { ModuleWatcher } from './module-watcher.js';
import { qemuDeviceJson } from './qemu-hint.js';
import { PciDevice } from '../server/pci/device.js';

/** One device a takeover carries from the old process to the new one (cli/takeover). */
export interface CarriedDevice {
  name: string;
  socket: string;
  /** The listening socket (owned by whoever holds this). */
  fd: number;
  /** The device's saved state (PciDevice.saveState). */
  state: Uint8Array;
  /** The old process had the socket from systemd: its file is never removed by us. */
  activated: boolean;
}

/** What a device start failed at ('state': the state a takeover carried was refused). */
export type StartStage = 'folder' | 'create' | 'state' | 'listen' | 'start';

/**
 * A device failed to start. `message` says it all for a terminal
 * ("device nvme0: cannot listen on /x.sock: ..."); `cause` is the original
 * error, which the log records once (not inside `message` again).
 */
export class DeviceStartError extends Error {
  constructor(
    readonly device: string,
    readonly stage: StartStage,
    message: string,
    options: { cause: unknown },
  ) {
    super(message, options);
    this.name = 'DeviceStartError';
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** What the daemon runs with besides its config. */
export interface DaemonOptions {
  /** Collect metrics for every device (served by the caller). */
  metrics?: MetricsRegistry;
  /** Listening fds passed by systemd, per device name (socket activation). */
  listenFds?: ReadonlyMap<string, number>;
  /** serve --watch: reload device modules (not built-in devices) when their files change. */
  watch?: boolean;
  /** Watches every device's connections (--trace-file), given the device's name. */
  observer?: (device: string) => ConnectionObserver;
}

/** A device entry with its factory resolved. */
interface PreparedDevice {
  spec: DeviceSpec;
  factory: DeviceFactory;
  options: Record<string, unknown>;
}

/** A device that is up. */
export interface RunningDevice {
  spec: DeviceSpec;
  hosted: HostedDevice;
  server: DeviceServer;
  log: Logger;
  /** Its socket came from systemd (never removed by us). */
  activated: boolean;
  /** With --watch, for a device module: reloads it when its files change. */
  watcher?: ModuleWatcher;
  /** Came from the old process of a takeover (held until finishTakeover()). */
  carried?: CarriedDevice;
}

export class Daemon {
  private running: RunningDevice[] = [];
  private starting?: Promise<void>;
  private stopRequested = false;
  private stopping?: Promise<void>;
  /** serve --takeover: the devices the old process handed over, per name (carry()). */
  private carried: ReadonlyMap<string, CarriedDevice> = new Map();

  private constructor(
    readonly config: DaemonConfig,
    private readonly prepared: PreparedDevice[],
    private readonly log: Logger,
    private readonly options: DaemonOptions,
  ) {}

  /** Resolve every device's factory; throws ConfigErrors listing every problem. */
  static async prepare(config: DaemonConfig, log: Logger, options: DaemonOptions = {}): Promise<Daemon> {
    const errors: ConfigError[] = [];
    const prepared: PreparedDevice[] = [];
    const field = (f: string): string => config.describeField?.(f) ?? f;
    for (const [i, spec] of config.devices.entries()) {
      if (spec.type !== 'module') {
        prepared.push({ spec, factory: builtinFactory(spec), options: {} });
        continue;
      }
      let mod;
      try {
        // Watched: the first generation is imported the way later ones are, so that
        // every generation resolves its imports (the library above all) alike.
        mod = await loadDeviceModule(spec.module, options.watch ? 1 : undefined);
      } catch (err) {
        errors.push(new ConfigError(config.source, field(`devices[${i}].type`), messageOf(err)));
        continue;
      }
      try {
        // The module's code, not ours: whatever it returns is checked here.
        const problems: unknown = mod.validateOptions?.(spec.options);
        if (Array.isArray(problems))
          for (const p of problems) errors.push(optionProblem(config.source, field, i, String(p)));
      } catch (err) {
        errors.push(
          new ConfigError(config.source, field(`devices[${i}].options`), `validateOptions threw: ${messageOf(err)}`),
        );
      }
      prepared.push({ spec, factory: mod.factory, options: spec.options });
    }
    if (errors.length > 0) throw new ConfigErrors(errors);
    return new Daemon(config, prepared, log, options);
  }

  /** What a device's factory receives. */
  private context(spec: DeviceSpec, options: Record<string, unknown>, check: boolean): DeviceContext {
    return {
      name: spec.name,
      socketPath: spec.socket,
      options,
      log: this.log,
      metrics: check ? noMetrics(spec.name) : (this.options.metrics?.device(spec.name) ?? NO_METRICS),
      check,
    };
  }

  /**
   * --check: build every device (its factory runs, with `check: true`) and
   * close it again, without listening or starting anything. Throws
   * ConfigErrors naming each device whose factory failed.
   */
  async check(): Promise<void> {
    const errors: ConfigError[] = [];
    const field = (f: string): string => this.config.describeField?.(f) ?? f;
    for (const [i, p] of this.prepared.entries()) {
      let hosted: HostedDevice;
      try {
        hosted = asHostedDevice(await p.factory(this.context(p.spec, p.options, true)));
      } catch (err) {
        errors.push(new ConfigError(this.config.source, field(`devices[${i}]`), `cannot create it: ${messageOf(err)}`));
        continue;
      }
      await closeQuietly(hosted, this.log.child({ device: p.spec.name }));
    }
    if (errors.length > 0) throw new ConfigErrors(errors);
  }

  /** The devices that are up (after start()). */
  get devices(): readonly RunningDevice[] {
    return this.running;
  }

  /**
   * Build and serve every device, one after another. Rejects on the first
   * failure; the caller then calls stop(), which also covers the devices
   * already started. A stop() during start lets the device being started
   * finish, starts no more, and stops them all.
   */
  start(): Promise<void> {
    this.starting ??= this.startAll();
    return this.starting;
  }

  private async startAll(): Promise<void> {
    for (const p of this.prepared) {
      if (this.stopRequested) return;
      await this.startOne(p);
    }
  }

  private async startOne({ spec, factory, options }: PreparedDevice): Promise<void> {
    const log = this.log.child({ device: spec.name });
    const folders = [
      dirname(spec.socket),
      ...(spec.type === 'nvme' ? spec.namespaces.flatMap((ns) => (ns.path ? [dirname(ns.path)] : [])) : []),
    ];
    const carried = this.carried.get(spec.name);
    const listenFd = carried?.fd ?? this.options.listenFds?.get(spec.name);
    // A socket systemd passed has its folder already (and is not ours to make).
    if (listenFd !== undefined) folders.shift();
    for (const folder of folders) {
      try {
        mkdirSync(folder, { recursive: true });
      } catch (err) {
        throw new DeviceStartError(
          spec.name,
          'folder',
          `device ${spec.name}: cannot create the folder ${folder}: ${messageOf(err)}`,
          { cause: err },
        );
      }
    }
    let hosted: HostedDevice;
    try {
      hosted = asHostedDevice(await factory(this.context(spec, options, false)));
    } catch (err) {
      throw new DeviceStartError(spec.name, 'create', `device ${spec.name}: cannot create it: ${messageOf(err)}`, {
        cause: err,
      });
    }
    if (carried) {
      try {
        await loadCarriedState(hosted, carried.state);
      } catch (err) {
        await closeQuietly(hosted, log);
        throw new DeviceStartError(
          spec.name,
          'state',
          `device ${spec.name}: cannot load the state handed over: ${messageOf(err)}`,
          { cause: err },
        );
      }
    }
    let server: DeviceServer;
    try {
      server = await serve(hosted.endpoint, {
        socketPath: spec.socket,
        log: this.log,
        ...(listenFd !== undefined && { listenFd }),
        ...(this.options.metrics && { metrics: this.options.metrics }),
        ...(this.options.observer && { observer: this.options.observer(spec.name) }),
      });
    } catch (err) {
      await closeQuietly(hosted, log);
      const code = (err as NodeJS.ErrnoException).code;
      const why =
        code === 'EADDRINUSE'
          ? `${spec.socket} is served by another live process (stop it first, or pick another socket path)`
          : messageOf(err);
      throw new DeviceStartError(spec.name, 'listen', `device ${spec.name}: cannot listen on ${spec.socket}: ${why}`, {
        cause: err,
      });
    }
    // Held until finishTakeover(): the old process still owns the device's data (it flushes on close).
    if (carried) server.pauseAccepting();
    // Only sockets we listen on are ours to remove (a passed one is systemd's;
    // a carried one is ours once the old process let go of it: finishTakeover()).
    const running: RunningDevice = {
      spec,
      hosted,
      server,
      log,
      activated: listenFd !== undefined,
      ...(carried && { carried }),
    };
    this.running.push(running);
    try {
      // A carried device starts in finishTakeover(), once the old process let go
      // of what start() opens (a GPIO card's control socket).
      if (!carried) await hosted.start?.();
    } catch (err) {
      throw new DeviceStartError(spec.name, 'start', `device ${spec.name}: ${messageOf(err)}`, { cause: err });
    }
    log.info(
      {
        socket: spec.socket,
        type: spec.type,
        qemu: qemuDeviceJson(spec.socket),
        ...(listenFd !== undefined && !carried && { activated: true }),
        ...(carried && { takenOver: true, stateBytes: carried.state.length }),
      },
      'device ready',
    );
    if (this.options.watch && spec.type === 'module' && !this.stopRequested) {
      running.watcher = new ModuleWatcher({
        modulePath: spec.module,
        server,
        context: () => this.context(spec, options, false),
        hosted: () => running.hosted,
        replaced: (next) => {
          running.hosted = next;
        },
        log,
      });
    }
  }

  // ---- takeover, the new process's side ----

  /**
   * serve --takeover, before start(): the devices the old process handed
   * over. Each is built, loads its state and adopts its socket, but stays
   * quiesced and accepts nobody until finishTakeover().
   */
  carry(carried: ReadonlyMap<string, CarriedDevice>): void {
    this.carried = carried;
  }

  /**
   * The old process let go of the carried devices: own their socket files,
   * resume them, start them (HostedDevice.start: side channels such as a GPIO
   * card's control socket, free now) and accept. A start that fails is logged
   * and the device served anyway: the old process is gone.
   */
  async finishTakeover(): Promise<void> {
    for (const d of this.running) {
      if (!d.carried) continue;
      if (!d.carried.activated) {
        d.server.claimSocketPath();
        d.activated = false;
      }
      if (d.hosted.endpoint instanceof PciDevice) await d.hosted.endpoint.resume();
      try {
        await d.hosted.start?.();
      } catch (err) {
        // The old process is gone: stopping the device would leave it served by nobody.
        d.log.error({ err }, 'start after the takeover failed: serving the device without what start() opens');
      }
      d.server.resumeAccepting();
      d.log.info('taken over: accepting clients');
    }
  }

  // ---- takeover, the old process's side ----

  /**
   * Hand over the devices named in `kept` (same name and socket in the new
   * process's config): stop accepting on them, quiesce and save each, and
   * return their states with copies of their listening sockets. Throws (with
   * everything resumed: resumeAfterHandOver) when one has a client attached
   * or cannot be saved.
   */
  async handOver(kept: ReadonlySet<string>): Promise<CarriedDevice[]> {
    const carried: CarriedDevice[] = [];
    const devices = this.running.filter((d) => kept.has(d.spec.name));
    try {
      for (const d of devices) d.server.pauseAccepting();
      for (const d of devices) {
        // Checked after the pause: no client can arrive in between.
        if (d.server.connection)
          throw new Error(
            `device ${d.spec.name} has a client attached (handing over a connected client is not implemented yet)`,
          );
        const endpoint = d.hosted.endpoint;
        if (!(endpoint instanceof PciDevice)) throw new Error(`device ${d.spec.name} has no state to hand over`);
        await endpoint.quiesce();
        const state = await endpoint.saveState();
        carried.push({
          name: d.spec.name,
          socket: d.spec.socket,
          fd: d.server.duplicateListenFd(),
          state,
          activated: d.activated,
        });
      }
    } catch (err) {
      for (const c of carried) native.closeFd(c.fd);
      await this.resumeAfterHandOver(kept);
      throw err;
    }
    return carried;
  }

  /** The takeover failed: resume the devices handOver() held and accept on their sockets again. */
  async resumeAfterHandOver(kept: ReadonlySet<string>): Promise<void> {
    for (const d of this.running) {
      if (!kept.has(d.spec.name)) continue;
      const endpoint = d.hosted.endpoint;
      try {
        if (endpoint instanceof PciDevice && endpoint.quiesced) await endpoint.resume();
      } catch (err) {
        d.log.error({ err }, 'resuming after a failed takeover failed');
      }
      d.server.resumeAccepting();
    }
  }

  /**
   * The new process adopted the devices handed over: close them here without
   * removing their sockets (theirs now), and stop the devices it did not keep.
   * The daemon is stopped afterwards.
   */
  async releaseAfterHandOver(kept: ReadonlySet<string>): Promise<void> {
    this.stopRequested = true;
    const devices = this.running.splice(0);
    this.stopping = Promise.all(
      devices.map(async (d) => {
        await d.watcher?.close();
        try {
          if (kept.has(d.spec.name)) await d.server.releaseSocket();
          else await d.server.close();
        } catch (err) {
          d.log.error({ err }, 'closing the socket failed');
        }
        await closeQuietly(d.hosted, d.log);
        d.log.info(kept.has(d.spec.name) ? 'handed over' : 'stopped (not in the new configuration)');
      }),
    ).then(() => undefined);
    await this.stopping;
  }

  /** Stop every device (idempotent; concurrent callers share one stop). Never throws: failures are logged. */
  stop(): Promise<void> {
    this.stopRequested = true;
    this.stopping ??= this.stopAll();
    return this.stopping;
  }

  private async stopAll(): Promise<void> {
    await this.starting?.catch(() => {});
    const devices = this.running.slice().reverse();
    await Promise.all(
      devices.map(async (d) => {
        await d.watcher?.close();
        try {
          await d.server.close();
        } catch (err) {
          d.log.error({ err }, 'closing the socket failed');
        }
        await closeQuietly(d.hosted, d.log);
        d.log.info('stopped');
      }),
    );
  }

  /** Last resort (hard timeout, fatal error): remove every socket file synchronously. */
  removeSocketFilesSync(): void {
    for (const d of this.running) {
      if (d.activated) continue;
      try {
        rmSync(d.spec.socket, { force: true });
      } catch {
        // Best effort while exiting; a stale socket file is replaced on the next start anyway.
      }
    }
  }
}

/**
 * A validateOptions problem, "field: what is wrong" (or free text), as a
 * ConfigError on that option: `devices[0].options.magic` in a file, the flag
 * that set it on the command line.
 */
function optionProblem(source: string, field: (f: string) => string, index: number, problem: string): ConfigError {
  const m = /^([A-Za-z_][\w.[\]]*): (.+)$/s.exec(problem);
  if (m) return new ConfigError(source, field(`devices[${index}].options.${m[1]}`), m[2]!);
  return new ConfigError(source, field(`devices[${index}].options`), problem);
}

/** A carried state goes into a quiesced device (resumed by finishTakeover()). */
async function loadCarriedState(hosted: HostedDevice, state: Uint8Array): Promise<void> {
  const endpoint = hosted.endpoint;
  if (!(endpoint instanceof PciDevice)) throw new Error('the device has no state to load (not a PciDevice)');
  await endpoint.quiesce();
  await endpoint.loadState(state);
}

async function closeQuietly(hosted: HostedDevice, log: Logger): Promise<void> {
  try {
    await hosted.close?.();
  } catch (err) {
    log.error({ err }, 'closing the device failed');
  }
}
