/**
 * Loading device modules: the daemon imports a user's module (config
 * `"type": "./my-device.js"`), finds its factory (`default` or
 * `createDevice`) and optional `validateOptions`, and normalises what the
 * factory returns. The contract itself (DeviceContext, HostedDevice,
 * DeviceFactory, OptionsValidator) is public API: server/device-module.ts.
 *
 * A module written in TypeScript (.ts, .mts, .cts) loads as it is: the first
 * one registers tsx's ESM hooks (tsx is a dependency) for the rest of the
 * process, the way `node --import tsx` would. Node's own type stripping is not
 * used: Node 20 has none, and where it exists it refuses what tsc accepts
 * (`import './regs.js'` for regs.ts, enums, parameter properties).
 */
import { pathToFileURL } from 'node:url';
import { generationUrl } from './module-generations.js';
import type { DeviceFactory, HostedDevice, OptionsValidator } from '../server/device-module.js';
import type { Endpoint } from '../server/endpoint.js';

export interface LoadedModule {
  factory: DeviceFactory;
  /** The module's `validateOptions` export; undefined when it has none. */
  validateOptions: OptionsValidator | undefined;
}

const TYPESCRIPT = /\.[cm]?ts$/;
let typeScriptHooks: Promise<void> | undefined;

/** Registers tsx's ESM hooks once, so import() compiles TypeScript modules and what they import. */
function enableTypeScript(): Promise<void> {
  typeScriptHooks ??= import('tsx/esm/api').then(({ register }) => {
    register();
  });
  return typeScriptHooks;
}

/**
 * Import a device module and find its factory; throws an Error whose message
 * says what is missing. `generation` (serve --watch) imports the module's
 * files afresh: a new generation of it, its local imports with it
 * (module-generations.ts); without it, Node's module cache decides.
 */
export async function loadDeviceModule(path: string, generation?: number): Promise<LoadedModule> {
  let mod: Record<string, unknown>;
  try {
    if (TYPESCRIPT.test(path)) await enableTypeScript();
    const url = generation === undefined ? pathToFileURL(path).href : generationUrl(path, generation);
    mod = (await import(url)) as Record<string, unknown>;
  } catch (err) {
    const detail = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new Error(`cannot load device module ${path}: ${detail}`, { cause: err });
  }
  const factory = typeof mod.createDevice === 'function' ? mod.createDevice : mod.default;
  if (typeof factory !== 'function') {
    throw new Error(`device module ${path} exports no factory (export a function as default or as createDevice)`);
  }
  const validateOptions =
    typeof mod.validateOptions === 'function' ? (mod.validateOptions as OptionsValidator) : undefined;
  return { factory: factory as DeviceFactory, validateOptions };
}

const ENDPOINT_METHODS = [
  'regionInfo',
  'irqInfo',
  'regionRead',
  'regionWrite',
  'setIrqs',
  'dmaMap',
  'dmaUnmap',
  'reset',
  'attach',
  'detach',
] as const;

function isEndpoint(value: unknown): value is Endpoint {
  return (
    value !== null &&
    typeof value === 'object' &&
    ENDPOINT_METHODS.every((m) => typeof (value as Record<string, unknown>)[m] === 'function')
  );
}

/** Normalise what a factory returned; throws if it is neither an Endpoint nor a HostedDevice. */
export function asHostedDevice(result: unknown): HostedDevice {
  if (result !== null && typeof result === 'object' && 'endpoint' in result) {
    const hosted = result as HostedDevice;
    if (!isEndpoint(hosted.endpoint))
      throw new TypeError('the factory returned { endpoint } whose endpoint is not an Endpoint (a PciDevice)');
    return hosted;
  }
  if (!isEndpoint(result))
    throw new TypeError('the factory must return a PciDevice (any Endpoint) or { endpoint, close? }');
  const closable = result as Endpoint & { close?: () => void | Promise<void> };
  if (typeof closable.close !== 'function') return { endpoint: result };
  return { endpoint: result, close: () => closable.close!() };
}
