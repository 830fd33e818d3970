/**
 * The device-module contract: what a module hosted by the daemon
 * (`vfio-user-ts serve --device ./my-device.js`, or config `"type":
 * "./my-device.js"`; docs/cli.md) exports. Its factory turns a device entry
 * into an Endpoint (usually a PciDevice) plus what to release at shutdown;
 * the daemon (cli/device-module.ts) loads the module and calls it.
 *
 * ```ts
 * import { PciDevice, type DeviceContext } from 'vfio-user-ts';
 * export function validateOptions(options: Record<string, unknown>): string[] {
 *   return typeof options.greeting === 'string' ? [] : ['greeting: must be a string'];
 * }
 * export default function createDevice(ctx: DeviceContext) {
 *   return new PciDevice({ name: ctx.name, log: ctx.log, ... });
 * }
 * ```
 */
import type { Endpoint } from './endpoint.js';
import type { Logger } from './log.js';
import type { DeviceMetrics } from './metrics/index.js';

/** What a factory receives. */
export interface DeviceContext {
  /** The device's name (config `name`, or a default such as `my-device0`). */
  name: string;
  /** Absolute path of the socket the daemon serves the device on. */
  socketPath: string;
  /** The entry's `options`, as written in the config file. */
  options: Record<string, unknown>;
  /** The daemon's logger: pass it to `new PciDevice({ log })`, which adds `{ device: name }` itself. */
  log: Logger;
  /**
   * The device's metrics, served by `vfio-user-ts serve --metrics HOST:PORT`
   * (a no-op, `enabled: false`, without it). See docs/writing-a-device.md §12.
   */
  metrics: DeviceMetrics;
  /**
   * True under `vfio-user-ts serve --check`: the device is built to prove the
   * configuration works, then closed at once without being served or
   * started. Create nothing lasting (files, sockets) when it is set.
   */
  check: boolean;
}

/** A device ready to serve, with its cleanup. */
export interface HostedDevice {
  endpoint: Endpoint;
  /** Called once the device's socket listens (e.g. to open a side channel); a failure stops the device. */
  start?(): void | Promise<void>;
  /** Called at shutdown after its socket is closed and the client detached: flush and close files. */
  close?(): void | Promise<void>;
  /** Extra lines printed at start under the QEMU hint (e.g. a control socket's path). */
  notes?: string[];
}

/** A device module's factory: exported as `default` or as `createDevice`. */
export type DeviceFactory = (ctx: DeviceContext) => Endpoint | HostedDevice | Promise<Endpoint | HostedDevice>;

/** A device module's optional `validateOptions` export: problems as "field: what is wrong" strings ([] or undefined: none). */
export type OptionsValidator = (options: Record<string, unknown>) => string[] | undefined;
