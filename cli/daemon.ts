/**
 * The daemon: many independent devices in one process, each served on its own
 * socket (one client at a time; a client leaving resets the device and the
 * socket takes the next one — server/server.ts does that).
 *
 * Lifecycle: `prepare(config)` loads device modules and checks their options
 * (ConfigErrors, before anything starts); `start()` builds and serves every
 * device, and rejects on the first failure (then call stop());
 * `stop()` closes every socket (dropping clients, which detaches them: DMA
 * unmapped, eventfds closed), then closes the devices (NVMe flushes), in
 * parallel across devices.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { serve, type DeviceServer } from '../server/server.js';
import { builtinFactory } from './builtin-devices.js';
import type { DaemonConfig, DeviceSpec } from './config.js';
import { ConfigError, ConfigErrors } from './config-error.js';
import type { DeviceFactory, HostedDevice } from '../server/device-module.js';
import { asHostedDevice, loadDeviceModule } from './device-module.js';
import { qemuDeviceJson } from './qemu-hint.js';

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
}

export class Daemon {
  private running: RunningDevice[] = [];
  private starting?: Promise<void>;
  private stopRequested = false;
  private stopping?: Promise<void>;

  private constructor(
    readonly config: DaemonConfig,
    private readonly prepared: PreparedDevice[],
    private readonly log: Logger,
  ) {}

  /** Resolve every device's factory; throws ConfigErrors listing every problem. */
  static async prepare(config: DaemonConfig, log: Logger): Promise<Daemon> {
    const errors: ConfigError[] = [];
    const prepared: PreparedDevice[] = [];
    for (const [i, spec] of config.devices.entries()) {
      if (spec.type !== 'module') {
        prepared.push({ spec, factory: builtinFactory(spec), options: {} });
        continue;
      }
      let mod;
      try {
        mod = await loadDeviceModule(spec.module);
      } catch (err) {
        errors.push(
          new ConfigError(config.source, `devices[${i}].type`, err instanceof Error ? err.message : String(err)),
        );
        continue;
      }
      try {
        // The module's code, not ours: whatever it returns is checked here.
        const problems: unknown = mod.validateOptions?.(spec.options);
        if (Array.isArray(problems))
          for (const p of problems) errors.push(new ConfigError(config.source, `devices[${i}].options`, String(p)));
      } catch (err) {
        errors.push(
          new ConfigError(config.source, `devices[${i}].options`, err instanceof Error ? err.message : String(err)),
        );
      }
      prepared.push({ spec, factory: mod.factory, options: spec.options });
    }
    if (errors.length > 0) throw new ConfigErrors(errors);
    return new Daemon(config, prepared, log);
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
    for (const folder of folders) {
      try {
        mkdirSync(folder, { recursive: true });
      } catch (err) {
        throw new Error(`device ${spec.name}: cannot create the folder ${folder}: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    let hosted: HostedDevice;
    try {
      hosted = asHostedDevice(await factory({ name: spec.name, socketPath: spec.socket, options, log: this.log }));
    } catch (err) {
      throw new Error(`device ${spec.name}: cannot create it: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      });
    }
    let server: DeviceServer;
    try {
      server = await serve(hosted.endpoint, { socketPath: spec.socket, log: this.log });
    } catch (err) {
      await closeQuietly(hosted, log);
      const code = (err as NodeJS.ErrnoException).code;
      const why =
        code === 'EADDRINUSE'
          ? `${spec.socket} is served by another live process (stop it first, or pick another socket path)`
          : err instanceof Error
            ? err.message
            : String(err);
      throw new Error(`device ${spec.name}: cannot listen on ${spec.socket}: ${why}`, { cause: err });
    }
    // Only sockets we listen on are ours to remove.
    this.running.push({ spec, hosted, server, log });
    try {
      await hosted.start?.();
    } catch (err) {
      throw new Error(`device ${spec.name}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    log.info({ socket: spec.socket, type: spec.type, qemu: qemuDeviceJson(spec.socket) }, 'device ready');
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
      try {
        rmSync(d.spec.socket, { force: true });
      } catch {
        // Best effort while exiting; a stale socket file is replaced on the next start anyway.
      }
    }
  }
}

async function closeQuietly(hosted: HostedDevice, log: Logger): Promise<void> {
  try {
    await hosted.close?.();
  } catch (err) {
    log.error({ err }, 'closing the device failed');
  }
}
