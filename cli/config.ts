/**
 * The daemon's configuration: what a config file (or the quick flags) may say,
 * and its validation. Validation is total: it never throws on bad input, it
 * reports every problem with the file, the field and what is wrong
 * (see ConfigError), and it touches nothing on disk except to look.
 *
 * File format (JSON): either a list of devices or `{ "logLevel"?, "devices": [...] }`.
 * Each device: `{ "type", "socket", "name"?, "options"? }` where type is
 * "nvme", "gpio" or a path to a module exporting a device factory
 * (see device-module.ts). Relative paths are relative to the config file's folder.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, extname, resolve } from 'node:path';
import { defaultControlPath } from '../devices/gpio/control.js';
import type { UnsealedFdPolicy } from '../server/dma/dma-space.js';
import { ErrorSink } from './config-error.js';
import { describe, parseSize } from './size.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Longest UNIX socket path (sun_path is 108 bytes including the NUL). */
const MAX_SOCKET_PATH = 107;

interface DeviceBase {
  /** Unique in the daemon; used in logs (`device` field). */
  name: string;
  /** Absolute path of the UNIX socket QEMU connects to. */
  socket: string;
}

/** Options both built-in devices take. */
interface BuiltinOptions {
  /** DMA_MAP fds not sealed against shrinking: 'map' (default), 'messages' or 'refuse'. */
  unsealedDmaFds?: UnsealedFdPolicy;
}

/** One NVMe namespace: a raw image file (created sparse if missing) or RAM. */
export interface NamespaceSpec {
  /** Absolute path of the backing file; absent: memory-backed. */
  path?: string;
  /** Bytes; absent when the file exists (its size is used). */
  size?: number;
  lbaSize: 512 | 4096;
}

export interface NvmeSpec extends DeviceBase, BuiltinOptions {
  type: 'nvme';
  namespaces: NamespaceSpec[];
  serial?: string;
  model?: string;
  firmware?: string;
  /** Most I/O queue pairs the controller offers. */
  queues?: number;
  /** Shadow-doorbell polling window in microseconds (0: off). */
  pollMicros?: number;
}

export interface GpioSpec extends DeviceBase, BuiltinOptions {
  type: 'gpio';
  /** Absolute path of the JSON-lines control socket, or null for none. */
  control: string | null;
}

export interface ModuleSpec extends DeviceBase {
  type: 'module';
  /** Absolute path of the device module. */
  module: string;
  /** Passed to the module's factory as is. */
  options: Record<string, unknown>;
}

export type DeviceSpec = NvmeSpec | GpioSpec | ModuleSpec;

/** Where to serve Prometheus metrics (`--metrics HOST:PORT`, config `"metrics"`). */
export interface ListenAddress {
  host: string;
  /** 0: any free port. */
  port: number;
}

export interface DaemonConfig {
  /** Where this came from: a config file's absolute path, "command line" or "built-in default". */
  source: string;
  logLevel?: LogLevel;
  /** Serve Prometheus metrics there. */
  metrics?: ListenAddress;
  devices: DeviceSpec[];
  /**
   * How a field of this config is named to its author: a config file's
   * `devices[0].options.magic` as is; on the command line the flag that set it
   * (`--device #1 (./x.ts) --option magic`). Default: as is.
   */
  describeField?: (field: string) => string;
}

/**
 * `HOST:PORT` (`[::1]:9464` for IPv6) as a ListenAddress, or what is wrong.
 */
export function parseListenAddress(value: unknown): ListenAddress | { error: string } {
  if (typeof value !== 'string') return { error: `must be "HOST:PORT", got ${describe(value)}` };
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535)
    return { error: `must be "HOST:PORT" (e.g. 127.0.0.1:9464, [::1]:9464), got ${JSON.stringify(value)}` };
  return { host: m[1] ?? m[2]!, port };
}

const DEVICE_FIELDS = new Set(['type', 'name', 'socket', 'options']);
const NVME_OPTIONS = new Set([
  'disk',
  'size',
  'lbaSize',
  'namespaces',
  'serial',
  'model',
  'firmware',
  'queues',
  'pollMicros',
  'unsealedDmaFds',
]);
const NAMESPACE_FIELDS = new Set(['disk', 'size', 'lbaSize']);
const GPIO_OPTIONS = new Set(['control', 'unsealedDmaFds']);
const UNSEALED_POLICIES: readonly UnsealedFdPolicy[] = ['map', 'messages', 'refuse'];

/** The options every built-in device takes. */
function validateBuiltinOptions(o: Record<string, unknown>, at: string, sink: ErrorSink): BuiltinOptions {
  const v = o.unsealedDmaFds;
  if (v === undefined) return {};
  if (typeof v === 'string' && (UNSEALED_POLICIES as readonly string[]).includes(v))
    return { unsealedDmaFds: v as UnsealedFdPolicy };
  sink.add(
    `${at}.unsealedDmaFds`,
    `must be one of ${UNSEALED_POLICIES.map((p) => `"${p}"`).join(', ')}, got ${describe(v)}`,
  );
  return {};
}
const MODULE_EXTENSIONS = new Set(['.js', '.mjs', '.cjs', '.ts', '.mts']);

/** True when a device `type` names a module file rather than a built-in device. */
function isModuleType(type: string): boolean {
  return type.startsWith('.') || type.startsWith('/') || MODULE_EXTENSIONS.has(extname(type));
}

/**
 * Validate a parsed config file (or the object the quick flags build).
 * `baseDir` resolves relative paths. Returns the config and every error found;
 * the config is only meaningful when there are no errors.
 */
export function validateConfig(
  raw: unknown,
  source: string,
  baseDir: string,
): { config: DaemonConfig; errors: ErrorSink['errors'] } {
  const sink = new ErrorSink(source);
  const config: DaemonConfig = { source, devices: [] };
  let list: unknown;
  if (Array.isArray(raw)) {
    list = raw;
  } else if (raw !== null && typeof raw === 'object') {
    const top = raw as Record<string, unknown>;
    for (const key of Object.keys(top)) {
      if (key !== 'devices' && key !== 'logLevel' && key !== 'metrics')
        sink.add(key, `unknown field (expected "devices" and optionally "logLevel", "metrics")`);
    }
    if (top.metrics !== undefined) {
      const parsed = parseListenAddress(top.metrics);
      if ('error' in parsed) sink.add('metrics', parsed.error);
      else config.metrics = parsed;
    }
    if (top.logLevel !== undefined) {
      if (typeof top.logLevel === 'string' && (LOG_LEVELS as readonly string[]).includes(top.logLevel))
        config.logLevel = top.logLevel as LogLevel;
      else sink.add('logLevel', `must be one of ${LOG_LEVELS.join(', ')}, got ${describe(top.logLevel)}`);
    }
    list = top.devices;
    if (list === undefined) sink.add('devices', 'is required: a list of devices');
  } else {
    sink.add('(top level)', `must be a list of devices or an object with "devices", got ${describe(raw)}`);
  }
  if (list !== undefined && !Array.isArray(list))
    sink.add('devices', `must be a list of devices, got ${describe(list)}`);
  if (Array.isArray(list)) {
    if (list.length === 0) sink.add('devices', 'is empty: configure at least one device');
    const counters = new Map<string, number>();
    const taken = new Set(
      list
        .map((e) => (e !== null && typeof e === 'object' ? (e as { name?: unknown }).name : undefined))
        .filter((n) => typeof n === 'string'),
    );
    const valid: { spec: DeviceSpec; at: string }[] = [];
    list.forEach((entry, i) => {
      const spec = validateDevice(entry, `devices[${i}]`, sink, baseDir);
      if (!spec) return;
      if (spec.name === '') {
        // Default names count per kind: nvme0, nvme1, gpio0, my-device0.
        const kind = spec.type === 'module' ? basename(spec.module, extname(spec.module)) : spec.type;
        let n = counters.get(kind) ?? 0;
        while (taken.has(`${kind}${n}`)) n++;
        counters.set(kind, n + 1);
        spec.name = `${kind}${n}`;
      }
      valid.push({ spec, at: `devices[${i}]` });
    });
    checkUnique(valid, sink);
    config.devices = valid.map((v) => v.spec);
  }
  return { config, errors: sink.errors };
}

function validateDevice(entry: unknown, at: string, sink: ErrorSink, baseDir: string): DeviceSpec | undefined {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    sink.add(at, `must be an object with "type" and "socket", got ${describe(entry)}`);
    return undefined;
  }
  const d = entry as Record<string, unknown>;
  const before = sink.errors.length;
  for (const key of Object.keys(d)) {
    if (!DEVICE_FIELDS.has(key)) sink.add(`${at}.${key}`, `unknown field (expected type, socket, name, options)`);
  }
  let type: string | undefined;
  if (typeof d.type !== 'string' || d.type === '') {
    sink.add(
      `${at}.type`,
      d.type === undefined
        ? 'is required: "nvme", "gpio" or a path to a device module'
        : `must be "nvme", "gpio" or a path to a device module, got ${describe(d.type)}`,
    );
  } else if (d.type === 'nvme' || d.type === 'gpio' || isModuleType(d.type)) {
    type = d.type;
  } else {
    sink.add(
      `${at}.type`,
      `unknown device type ${JSON.stringify(d.type)} (expected "nvme", "gpio" or a path to a device module such as "./my-device.js")`,
    );
  }
  const socket = validateSocket(d.socket, `${at}.socket`, sink, baseDir);
  let name: string | undefined;
  if (d.name !== undefined) {
    if (typeof d.name === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(d.name)) name = d.name;
    else
      sink.add(
        `${at}.name`,
        `must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit), got ${describe(d.name)}`,
      );
  }
  let options: Record<string, unknown> = {};
  if (d.options !== undefined) {
    if (d.options !== null && typeof d.options === 'object' && !Array.isArray(d.options))
      options = d.options as Record<string, unknown>;
    else sink.add(`${at}.options`, `must be an object, got ${describe(d.options)}`);
  }
  if (type === undefined) return undefined;
  // Options are checked even without a valid socket, so every error shows at once.
  // An empty name is filled in by validateConfig once all devices are known.
  const base = { name: name ?? '', socket: socket ?? '' };
  let spec: DeviceSpec | undefined;
  if (type === 'nvme') spec = validateNvme(options, `${at}.options`, sink, baseDir, base);
  else if (type === 'gpio') spec = validateGpio(options, `${at}.options`, sink, baseDir, base);
  else {
    const module = resolve(baseDir, type);
    if (!existsSync(module)) sink.add(`${at}.type`, `device module ${module} does not exist`);
    else spec = { type: 'module', module, options, ...base };
  }
  return sink.errors.length === before && socket !== undefined ? spec : undefined;
}

function validateSocket(value: unknown, at: string, sink: ErrorSink, baseDir: string): string | undefined {
  if (value === undefined) {
    sink.add(at, 'is required (the UNIX socket path QEMU connects to)');
    return undefined;
  }
  if (typeof value !== 'string' || value === '') {
    sink.add(at, `must be a file path, got ${describe(value)}`);
    return undefined;
  }
  const path = resolve(baseDir, value);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    sink.add(
      at,
      `${path} is ${Buffer.byteLength(path)} bytes long; UNIX socket paths must be at most ${MAX_SOCKET_PATH}`,
    );
    return undefined;
  }
  if (existsSync(path) && !statSync(path).isSocket()) {
    sink.add(at, `${path} exists and is not a socket (refusing to replace it)`);
    return undefined;
  }
  return path;
}

function checkKnown(options: Record<string, unknown>, known: Set<string>, at: string, sink: ErrorSink): void {
  for (const key of Object.keys(options)) {
    if (!known.has(key)) sink.add(`${at}.${key}`, `unknown option (expected one of ${[...known].join(', ')})`);
  }
}

function validateNvme(
  o: Record<string, unknown>,
  at: string,
  sink: ErrorSink,
  baseDir: string,
  base: { name: string; socket: string },
): NvmeSpec | undefined {
  checkKnown(o, NVME_OPTIONS, at, sink);
  const spec: NvmeSpec = { type: 'nvme', ...base, ...validateBuiltinOptions(o, at, sink), namespaces: [] };
  if (o.namespaces !== undefined) {
    for (const key of ['disk', 'size', 'lbaSize']) {
      if (o[key] !== undefined)
        sink.add(`${at}.${key}`, 'cannot be used together with "namespaces" (put it in each namespace)');
    }
    if (!Array.isArray(o.namespaces) || o.namespaces.length === 0) {
      sink.add(
        `${at}.namespaces`,
        `must be a non-empty list of { disk?, size?, lbaSize? }, got ${describe(o.namespaces)}`,
      );
    } else {
      o.namespaces.forEach((ns, i) => {
        const where = `${at}.namespaces[${i}]`;
        if (ns === null || typeof ns !== 'object' || Array.isArray(ns)) {
          sink.add(where, `must be an object { disk?, size?, lbaSize? }, got ${describe(ns)}`);
          return;
        }
        checkKnown(ns as Record<string, unknown>, NAMESPACE_FIELDS, where, sink);
        const parsed = validateNamespace(ns as Record<string, unknown>, where, sink, baseDir);
        if (parsed) spec.namespaces.push(parsed);
      });
    }
  } else {
    const parsed = validateNamespace(o, at, sink, baseDir);
    if (parsed) spec.namespaces.push(parsed);
  }
  const paths = spec.namespaces.map((n) => n.path).filter((p) => p !== undefined);
  if (new Set(paths).size !== paths.length) sink.add(`${at}.namespaces`, 'two namespaces use the same disk file');
  for (const key of ['serial', 'model', 'firmware'] as const) {
    const limit = key === 'serial' ? 20 : key === 'model' ? 40 : 8;
    const v = o[key];
    if (v === undefined) continue;
    if (typeof v === 'string' && v.length > 0 && v.length <= limit && /^[\x20-\x7e]+$/.test(v)) spec[key] = v;
    else
      sink.add(
        `${at}.${key}`,
        `must be 1-${limit} printable ASCII characters (NVMe Identify field), got ${describe(v)}`,
      );
  }
  if (o.queues !== undefined) {
    if (typeof o.queues === 'number' && Number.isInteger(o.queues) && o.queues >= 1 && o.queues <= 64)
      spec.queues = o.queues;
    else sink.add(`${at}.queues`, `must be a whole number from 1 to 64, got ${describe(o.queues)}`);
  }
  if (o.pollMicros !== undefined) {
    const v = o.pollMicros;
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 1_000_000) spec.pollMicros = v;
    else
      sink.add(
        `${at}.pollMicros`,
        `must be a whole number of microseconds from 0 (off) to 1000000, got ${describe(v)}`,
      );
  }
  return spec;
}

function validateNamespace(
  o: Record<string, unknown>,
  at: string,
  sink: ErrorSink,
  baseDir: string,
): NamespaceSpec | undefined {
  const before = sink.errors.length;
  let lbaSize: 512 | 4096 = 512;
  if (o.lbaSize !== undefined) {
    if (o.lbaSize === 512 || o.lbaSize === 4096) lbaSize = o.lbaSize;
    else sink.add(`${at}.lbaSize`, `must be 512 or 4096, got ${describe(o.lbaSize)}`);
  }
  let path: string | undefined;
  let existingSize: number | undefined;
  if (o.disk !== undefined) {
    if (typeof o.disk !== 'string' || o.disk === '') {
      sink.add(`${at}.disk`, `must be a file path, got ${describe(o.disk)}`);
    } else {
      path = resolve(baseDir, o.disk);
      if (existsSync(path)) {
        const st = statSync(path);
        if (!st.isFile() && !st.isBlockDevice())
          sink.add(`${at}.disk`, `${path} is not a regular file or block device`);
        else if (st.isFile()) existingSize = st.size;
      }
    }
  }
  let size: number | undefined;
  if (o.size !== undefined) {
    const parsed = parseSize(o.size);
    if ('error' in parsed) sink.add(`${at}.size`, parsed.error);
    else if (parsed.bytes % lbaSize !== 0)
      sink.add(`${at}.size`, `${parsed.bytes} bytes is not a multiple of the ${lbaSize}-byte LBA size`);
    else size = parsed.bytes;
  } else if (existingSize === undefined && !(path && existsSync(path))) {
    sink.add(
      `${at}.size`,
      path
        ? `is required: ${path} does not exist yet and will be created sparse at this size`
        : 'is required for a memory-backed namespace (or give "disk")',
    );
  } else if (existingSize !== undefined && (existingSize === 0 || existingSize % lbaSize !== 0)) {
    sink.add(
      `${at}.disk`,
      `${path} is ${existingSize} bytes, not a positive multiple of the ${lbaSize}-byte LBA size; give "size"`,
    );
  }
  if (sink.errors.length !== before) return undefined;
  return { ...(path !== undefined && { path }), ...(size !== undefined && { size }), lbaSize };
}

function validateGpio(
  o: Record<string, unknown>,
  at: string,
  sink: ErrorSink,
  baseDir: string,
  base: { name: string; socket: string },
): GpioSpec | undefined {
  checkKnown(o, GPIO_OPTIONS, at, sink);
  let control: string | null = base.socket ? defaultControlPath(base.socket) : null;
  if (o.control === false || o.control === null) control = null;
  else if (o.control !== undefined) {
    control = validateSocket(o.control, `${at}.control`, sink, baseDir) ?? null;
  }
  return { type: 'gpio', ...base, ...validateBuiltinOptions(o, at, sink), control };
}

function checkUnique(devices: { spec: DeviceSpec; at: string }[], sink: ErrorSink): void {
  const seen = new Map<string, string>();
  const claim = (key: string, what: string, at: string): boolean => {
    const prior = seen.get(key);
    if (prior) sink.add(at, `${what} is already used by ${prior}`);
    else seen.set(key, at);
    return prior === undefined;
  };
  for (const { spec: d, at } of devices) {
    claim(`name:${d.name}`, `name ${JSON.stringify(d.name)}`, `${at}.name`);
    const socketFree = claim(`path:${d.socket}`, `socket ${d.socket}`, `${at}.socket`);
    // A control path derived from a duplicate socket is the same mistake: report it once.
    if (d.type === 'gpio' && d.control && socketFree)
      claim(`path:${d.control}`, `control socket ${d.control}`, `${at}.options.control`);
    if (d.type === 'nvme') {
      d.namespaces.forEach((ns, j) => {
        if (ns.path)
          claim(
            `path:${ns.path}`,
            `disk ${ns.path}`,
            d.namespaces.length > 1 ? `${at}.options.namespaces[${j}].disk` : `${at}.options.disk`,
          );
      });
    }
  }
}
