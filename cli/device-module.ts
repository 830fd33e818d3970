/**
 * Devices the daemon hosts: a factory turns a validated device entry into an
 * Endpoint (usually a PciDevice) plus what to release at shutdown.
 *
 * A user's device module (config `"type": "./my-device.js"`) exports its
 * factory as `default` or `createDevice`, and optionally `validateOptions`:
 *
 * ```ts
 * import { PciDevice } from 'vfio-user-ts';
 * import type { DeviceContext } from 'vfio-user-ts';
 * export function validateOptions(options: Record<string, unknown>): string[] {
 *   return typeof options.greeting === 'string' ? [] : ['greeting: must be a string'];
 * }
 * export default function createDevice(ctx: DeviceContext) {
 *   return new PciDevice({ name: ctx.name, log: ctx.log, ... });
 * }
 * ```
 */
import { pathToFileURL } from 'node:url';
import type { Logger } from 'pino';
import type { Endpoint } from '../server/endpoint.js';

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

export type DeviceFactory = (ctx: DeviceContext) => Endpoint | HostedDevice | Promise<Endpoint | HostedDevice>;

/** What `validateOptions` may return: problems as "field: what is wrong" strings. */
export type OptionsValidator = (options: Record<string, unknown>) => string[] | undefined | void;

export interface LoadedModule {
  factory: DeviceFactory;
  validateOptions?: OptionsValidator;
}

/** Import a device module and find its factory; throws an Error whose message says what is missing. */
export async function loadDeviceModule(path: string): Promise<LoadedModule> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (err) {
    const detail = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new Error(`cannot load device module ${path}: ${detail}`);
  }
  const factory = typeof mod.createDevice === 'function' ? mod.createDevice : mod.default;
  if (typeof factory !== 'function') {
    throw new Error(`device module ${path} exports no factory (export a function as default or as createDevice)`);
  }
  const validateOptions = typeof mod.validateOptions === 'function' ? (mod.validateOptions as OptionsValidator) : undefined;
  return { factory: factory as DeviceFactory, validateOptions };
}

const ENDPOINT_METHODS = ['regionInfo', 'irqInfo', 'regionRead', 'regionWrite', 'setIrqs', 'dmaMap', 'dmaUnmap', 'reset', 'attach', 'detach'] as const;

function isEndpoint(value: unknown): value is Endpoint {
  return value !== null && typeof value === 'object' && ENDPOINT_METHODS.every((m) => typeof (value as Record<string, unknown>)[m] === 'function');
}

/** Normalise what a factory returned; throws if it is neither an Endpoint nor a HostedDevice. */
export function asHostedDevice(result: unknown): HostedDevice {
  if (result !== null && typeof result === 'object' && 'endpoint' in result) {
    const hosted = result as HostedDevice;
    if (!isEndpoint(hosted.endpoint)) throw new TypeError('the factory returned { endpoint } whose endpoint is not an Endpoint (a PciDevice)');
    return hosted;
  }
  if (!isEndpoint(result)) throw new TypeError('the factory must return a PciDevice (any Endpoint) or { endpoint, close? }');
  const closable = result as Endpoint & { close?: () => void | Promise<void> };
  return { endpoint: result, close: typeof closable.close === 'function' ? () => closable.close!() : undefined };
}
