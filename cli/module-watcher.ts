/**
 * `vfio-user-ts serve --watch`: reload a device module when its files change,
 * under the running guest.
 *
 * Watched: the folder of the module file, for changes to JavaScript and
 * TypeScript files (the module and its local imports; a rename-on-save
 * editor shows up as a rename there). Changes are debounced (an editor
 * writes a file in several steps); then the next generation of the module
 * is imported (module-generations.ts), its factory builds the device, and
 * DeviceServer.replaceDevice swaps it in on the live connection (or just
 * swaps the device when no client is attached): quiesce, save, load, resume.
 *
 * A generation that fails to import, to validate its options, to build, or
 * to accept the running device's state leaves the running device as it was
 * and logs why (warn); the next change tries again. Reloads run one at a
 * time; changes during one start another after it.
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import type { DeviceContext, HostedDevice } from '../server/device-module.js';
import type { DeviceServer } from '../server/server.js';
import { ReplaceDeviceError } from '../server/replace-device.js';
import { asHostedDevice, loadDeviceModule } from './device-module.js';

const SOURCE_FILE = /\.(?:[cm]?[jt]s|tsx|jsx|json)$/;

/** How long the files must stay unchanged before a reload starts. */
const DEFAULT_DEBOUNCE_MS = 150;

export interface ModuleWatcherOptions {
  /** Absolute path of the device module. */
  modulePath: string;
  server: DeviceServer;
  /** The device's factory context (the options as configured). */
  context: () => DeviceContext;
  /** The running generation's HostedDevice. */
  hosted: () => HostedDevice;
  /** A new generation took over: it is now the running one. */
  replaced: (hosted: HostedDevice) => void;
  log: Logger;
  debounceMs?: number;
}

/** The error in a line: a load error's message with the first lines of its cause (a compiler's "file:line: what"). */
function messageOf(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? ` (${err.cause.message.split('\n').slice(1, 3).join(' ').trim()})` : '';
  return `${err.message.split('\n')[0]!}${cause === ' ()' ? '' : cause}`;
}

export class ModuleWatcher {
  readonly #options: ModuleWatcherOptions;
  readonly #watcher: FSWatcher;
  #timer: NodeJS.Timeout | undefined;
  #generation = 1;
  #reloading: Promise<void> | undefined;
  #again = false;
  #closed = false;
  /** Reloads that took over, and how long each took (ms). */
  readonly reloadTimes: number[] = [];

  constructor(options: ModuleWatcherOptions) {
    this.#options = options;
    this.#watcher = watch(dirname(options.modulePath), (_event, file) => {
      if (file !== null && !SOURCE_FILE.test(file)) return;
      this.#changed();
    });
    this.#watcher.on('error', (err) => options.log.warn({ err }, 'watching the device module failed'));
    options.log.info({ module: options.modulePath }, `watching ${basename(options.modulePath)} and its folder`);
  }

  #changed(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#reload(), this.#options.debounceMs ?? DEFAULT_DEBOUNCE_MS);
  }

  #reload(): void {
    if (this.#reloading) {
      this.#again = true;
      return;
    }
    this.#reloading = this.#reloadOnce().finally(() => {
      this.#reloading = undefined;
      if (this.#again && !this.#closed) {
        this.#again = false;
        this.#reload();
      }
    });
  }

  async #reloadOnce(): Promise<void> {
    const { log, modulePath, server } = this.#options;
    const generation = ++this.#generation;
    const t0 = performance.now();
    const keep = (stage: string, err: unknown): void => {
      log.warn(
        { generation, stage, err: messageOf(err) },
        `device module reload failed (${stage}): the running device is kept: ${messageOf(err)}`,
      );
    };
    let mod;
    try {
      mod = await loadDeviceModule(modulePath, generation);
    } catch (err) {
      keep('import', err);
      return;
    }
    const ctx = this.#options.context();
    try {
      const problems: unknown = mod.validateOptions?.(ctx.options);
      if (Array.isArray(problems) && problems.length > 0) throw new Error(problems.map(String).join('; '));
    } catch (err) {
      keep('options', err);
      return;
    }
    if (this.#closed) return;
    let made: HostedDevice | undefined;
    try {
      const result = await server.replaceDevice(async () => {
        made = asHostedDevice(await mod.factory(ctx));
        return made.endpoint;
      });
      const previous = this.#options.hosted();
      this.#options.replaced(made!);
      await closeHosted(previous, log);
      await made!.start?.();
      const ms = performance.now() - t0;
      this.reloadTimes.push(ms);
      log.info(
        {
          generation,
          ms: Math.round(ms * 10) / 10,
          heldMs: Math.round(result.heldMs * 10) / 10,
          stateBytes: result.stateBytes,
          connected: result.connected,
        },
        'device module reloaded',
      );
    } catch (err) {
      if (made && this.#options.hosted() !== made) await closeHosted(made, log);
      keep(err instanceof ReplaceDeviceError ? err.stage : 'start', err);
    }
  }

  /** Stop watching; resolves once a reload in progress is over. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#watcher.close();
    await this.#reloading;
  }
}

async function closeHosted(hosted: HostedDevice, log: Logger): Promise<void> {
  try {
    await hosted.close?.();
  } catch (err) {
    log.warn({ err }, 'closing the previous generation of the device failed');
  }
}
