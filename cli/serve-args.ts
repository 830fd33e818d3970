/**
 * `vfio-user-ts serve` arguments (node:util parseArgs): either `--config FILE`,
 * or quick flags where each `--device TYPE` starts a device and the flags after
 * it (`--socket`, `--disk`, `--size`, ...) belong to it, or nothing (the
 * built-in default). Every path ends up validated by validateConfig, so the
 * same rules and messages apply; quick-flag errors name the flag.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { LOG_LEVELS, parseListenAddress, validateConfig, type DaemonConfig, type LogLevel } from './config.js';
import { ConfigError, ConfigErrors } from './config-error.js';
import { DEFAULT_CONFIG, DEFAULT_CONFIG_SOURCE } from './default-config.js';
import { parseSize } from './size.js';

const COMMAND_LINE = 'command line';

export type LogFormat = 'auto' | 'json' | 'pretty';

export interface ServeCommandOptions {
  help: boolean;
  /** Validate, print the devices and exit without starting. */
  check: boolean;
  /** Reload device modules when their files change (cli/module-watcher.ts). */
  watch: boolean;
  /** Take the devices over from the daemon running with this config (cli/takeover). */
  takeover: boolean;
  logLevel?: LogLevel;
  logFormat: LogFormat;
  config: DaemonConfig;
  /** --trace-file: capture every device's messages, decoded, to this file (JSON lines). */
  traceFile?: TraceFileOptions;
}

export interface TraceFileOptions {
  /** Absolute path of the capture. */
  path: string;
  /** The capture stops at this size (--trace-max-bytes, default 256 MiB). */
  maxBytes: number;
  /** Keep the first N bytes of every message as hex (--trace-raw-bytes, default 0: none). */
  rawBytes: number;
}

/** --trace-max-bytes when not given. */
const DEFAULT_TRACE_MAX_BYTES = 256 << 20;
/** Most bytes --trace-raw-bytes may keep per message (a message is at most 1 MiB + 32; a line stays readable). */
const MAX_TRACE_RAW_BYTES = 4096;

/** Flags that belong to the latest --device, and where each lands in a device entry. */
const DEVICE_FLAGS: Record<string, string> = {
  socket: 'socket',
  name: 'name',
  disk: 'options.disk',
  size: 'options.size',
  'lba-size': 'options.lbaSize',
  queues: 'options.queues',
  'poll-us': 'options.pollMicros',
  control: 'options.control',
  option: 'options.*',
};
const NUMERIC_FLAGS = new Set(['lba-size', 'queues', 'poll-us']);

const SPEC = {
  help: { type: 'boolean', short: 'h' },
  config: { type: 'string', short: 'c' },
  check: { type: 'boolean' },
  watch: { type: 'boolean' },
  takeover: { type: 'boolean' },
  device: { type: 'string', short: 'd', multiple: true },
  socket: { type: 'string', short: 's', multiple: true },
  name: { type: 'string', multiple: true },
  disk: { type: 'string', multiple: true },
  size: { type: 'string', multiple: true },
  'lba-size': { type: 'string', multiple: true },
  queues: { type: 'string', multiple: true },
  'poll-us': { type: 'string', multiple: true },
  control: { type: 'string', multiple: true },
  option: { type: 'string', short: 'o', multiple: true },
  metrics: { type: 'string' },
  'log-level': { type: 'string' },
  'log-format': { type: 'string' },
  trace: { type: 'boolean' },
  'trace-file': { type: 'string' },
  'trace-max-bytes': { type: 'string' },
  'trace-raw-bytes': { type: 'string' },
} as const;

/** Parse and validate; throws ConfigErrors (every problem) for bad input. */
export function parseServeArgs(args: string[], cwd = process.cwd()): ServeCommandOptions {
  const errors: ConfigError[] = [];
  let parsed: ReturnType<
    typeof parseArgs<{ args: string[]; options: typeof SPEC; tokens: true; allowPositionals: false; strict: true }>
  >;
  try {
    parsed = parseArgs({ args, options: SPEC, tokens: true, allowPositionals: false, strict: true });
  } catch (err) {
    throw new ConfigErrors([
      new ConfigError(COMMAND_LINE, 'arguments', `${(err as Error).message} (see vfio-user-ts serve --help)`),
    ]);
  }
  const { values, tokens } = parsed;
  const result: Omit<ServeCommandOptions, 'config'> = {
    help: values.help === true,
    check: values.check === true,
    watch: values.watch === true,
    takeover: values.takeover === true,
    logFormat: 'auto',
  };
  if (values['log-level'] !== undefined) {
    if ((LOG_LEVELS as readonly string[]).includes(values['log-level']))
      result.logLevel = values['log-level'] as LogLevel;
    else
      errors.push(
        new ConfigError(
          COMMAND_LINE,
          '--log-level',
          `must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(values['log-level'])}`,
        ),
      );
  }
  if (values.trace) {
    if (result.logLevel !== undefined && result.logLevel !== 'debug' && result.logLevel !== 'trace') {
      errors.push(
        new ConfigError(
          COMMAND_LINE,
          '--trace',
          `contradicts --log-level ${result.logLevel} (--trace means --log-level debug)`,
        ),
      );
    }
    result.logLevel = result.logLevel === 'trace' ? 'trace' : 'debug';
  }
  if (values['log-format'] !== undefined) {
    const f = values['log-format'];
    if (f === 'auto' || f === 'json' || f === 'pretty') result.logFormat = f;
    else
      errors.push(
        new ConfigError(COMMAND_LINE, '--log-format', `must be auto, json or pretty, got ${JSON.stringify(f)}`),
      );
  }
  const traceFile = traceFileOptions(values, cwd, errors);
  if (traceFile) result.traceFile = traceFile;
  let metrics: DaemonConfig['metrics'];
  if (values.metrics !== undefined) {
    const parsed = parseListenAddress(values.metrics);
    if ('error' in parsed) errors.push(new ConfigError(COMMAND_LINE, '--metrics', parsed.error));
    else metrics = parsed;
  }
  if (result.help) return { ...result, config: { source: COMMAND_LINE, devices: [] } };

  let config: DaemonConfig = { source: COMMAND_LINE, devices: [] };
  if (values.config !== undefined) {
    if (values.device !== undefined) {
      errors.push(
        new ConfigError(COMMAND_LINE, '--device', 'cannot be combined with --config (put the devices in the file)'),
      );
    } else {
      const { config: fromFile, errors: fileErrors } = loadConfigFile(resolve(cwd, values.config));
      config = fromFile;
      errors.push(...fileErrors);
    }
  } else if (values.device !== undefined) {
    const { devices, optionKeys, errors: flagErrors } = groupDeviceFlags(tokens);
    errors.push(...flagErrors);
    const validated = validateConfig({ devices }, COMMAND_LINE, cwd);
    const describeField = (field: string): string => flagName(field, devices, optionKeys);
    config = { ...validated.config, describeField };
    errors.push(...validated.errors.map((e) => new ConfigError(COMMAND_LINE, describeField(e.field), e.problem)));
  } else {
    const stray = Object.keys(DEVICE_FLAGS).filter((f) => values[f as keyof typeof values] !== undefined);
    for (const f of stray)
      errors.push(new ConfigError(COMMAND_LINE, `--${f}`, 'belongs to a device: put it after --device TYPE'));
    const validated = validateConfig(DEFAULT_CONFIG, DEFAULT_CONFIG_SOURCE, cwd);
    config = validated.config;
    errors.push(...validated.errors);
  }
  const envLevel = process.env.LOG_LEVEL;
  if (result.logLevel === undefined && config.logLevel === undefined && envLevel !== undefined && envLevel !== '') {
    // createLogger reads LOG_LEVEL itself; pino throws on a bad one, so check it here.
    if (!(LOG_LEVELS as readonly string[]).includes(envLevel)) {
      errors.push(
        new ConfigError(
          'environment',
          'LOG_LEVEL',
          `must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(envLevel)}`,
        ),
      );
    }
  }
  if (errors.length > 0) throw new ConfigErrors(errors);
  if (result.logLevel === undefined && config.logLevel !== undefined) result.logLevel = config.logLevel;
  if (metrics !== undefined) config.metrics = metrics; // the flag wins over the file
  return { ...result, config };
}

/** Read and validate a JSON config file; errors name the file. */
function loadConfigFile(path: string): { config: DaemonConfig; errors: ConfigError[] } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder, not a file' : (err as Error).message;
    return {
      config: { source: path, devices: [] },
      errors: [new ConfigError(path, '(file)', `cannot read it: ${why}`)],
    };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return {
      config: { source: path, devices: [] },
      errors: [new ConfigError(path, '(file)', `is not valid JSON: ${(err as Error).message}`)],
    };
  }
  return validateConfig(raw, path, dirname(path));
}

/**
 * `--option KEY=VALUE`: VALUE is JSON when it parses as JSON (numbers,
 * true/false, null, quoted strings, arrays, objects), else the string as written.
 */
function parseOption(text: string): { key: string; value: unknown } | { error: string } {
  const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(text);
  if (!m) return { error: `must be KEY=VALUE (KEY a name, VALUE JSON or text), got ${JSON.stringify(text)}` };
  let value: unknown = m[2];
  try {
    value = JSON.parse(m[2]!);
  } catch {
    // Plain text.
  }
  return { key: m[1]!, value };
}

/** Turn the ordered flag tokens into device entries: each --device starts one. */
function groupDeviceFlags(tokens: NonNullable<ReturnType<typeof parseArgs>['tokens']>): {
  devices: Record<string, unknown>[];
  /** Per device, the option keys set with --option (so errors about them name that flag). */
  optionKeys: Set<string>[];
  errors: ConfigError[];
} {
  const devices: Record<string, unknown>[] = [];
  const optionKeys: Set<string>[] = [];
  const errors: ConfigError[] = [];
  for (const token of tokens) {
    if (token.kind !== 'option') continue;
    if (token.name === 'device') {
      devices.push({ type: token.value });
      optionKeys.push(new Set());
      continue;
    }
    const target = DEVICE_FLAGS[token.name];
    if (target === undefined) continue;
    const device = devices.at(-1);
    if (device === undefined) {
      errors.push(new ConfigError(COMMAND_LINE, `--${token.name}`, 'belongs to a device: put it after --device TYPE'));
      continue;
    }
    let value: unknown = token.value;
    let flag = `--${token.name}`;
    // DEVICE_FLAGS' targets: 'field' or 'options.field'.
    const [head = target, targetKey] = target.split('.');
    let key = targetKey;
    if (token.name === 'option') {
      const parsed = parseOption(token.value ?? '');
      if ('error' in parsed) {
        errors.push(new ConfigError(COMMAND_LINE, deviceLabel(devices.length - 1, device) + ' --option', parsed.error));
        continue;
      }
      key = parsed.key;
      value = parsed.value;
      flag = `--option ${key}`;
      optionKeys[devices.length - 1]!.add(key);
    }
    if (NUMERIC_FLAGS.has(token.name) && typeof value === 'string' && /^\d+$/.test(value)) value = Number(value);
    if (token.name === 'control' && value === 'none') value = null;
    if (key === undefined) {
      if (head in device)
        errors.push(
          new ConfigError(
            COMMAND_LINE,
            deviceLabel(devices.length - 1, device) + ` ${flag}`,
            'given twice for this device',
          ),
        );
      device[head] = value;
    } else {
      const options = (device.options ??= {}) as Record<string, unknown>;
      if (key in options)
        errors.push(
          new ConfigError(
            COMMAND_LINE,
            deviceLabel(devices.length - 1, device) + ` ${flag}`,
            'given twice for this device',
          ),
        );
      options[key] = value;
    }
  }
  return { devices, optionKeys, errors };
}

function deviceLabel(index: number, device: Record<string, unknown>): string {
  return `--device #${index + 1} (${String(device.type)})`;
}

/**
 * `devices[1].options.size` -> `--device #2 (nvme) --size`; an option set
 * with --option names that flag: `--device #1 (./x.ts) --option magic`.
 */
function flagName(field: string, devices: Record<string, unknown>[], optionKeys: Set<string>[]): string {
  const m = /^devices\[(\d+)\](?:\.(.+))?$/.exec(field);
  if (!m) return field;
  const index = Number(m[1]);
  const label = deviceLabel(index, devices[index] ?? {});
  const rest = m[2];
  if (rest === undefined || rest === 'type') return label;
  const optionKey = /^options\.([A-Za-z_][A-Za-z0-9_]*)/.exec(rest)?.[1];
  if (optionKey !== undefined && optionKeys[index]?.has(optionKey)) return `${label} --option ${rest.slice(8)}`;
  const flag = Object.entries(DEVICE_FLAGS).find(([, target]) => target === rest)?.[0];
  if (flag) return `${label} --${flag}`;
  return rest === 'options' ? label : `${label} ${rest}`;
}

/** --trace-file and its companions (which need it). */
function traceFileOptions(
  values: { 'trace-file'?: string; 'trace-max-bytes'?: string; 'trace-raw-bytes'?: string },
  cwd: string,
  errors: ConfigError[],
): TraceFileOptions | undefined {
  const path = values['trace-file'];
  if (path === undefined) {
    for (const flag of ['trace-max-bytes', 'trace-raw-bytes'] as const)
      if (values[flag] !== undefined) errors.push(new ConfigError(COMMAND_LINE, `--${flag}`, 'needs --trace-file'));
    return undefined;
  }
  if (path === '') {
    errors.push(new ConfigError(COMMAND_LINE, '--trace-file', 'needs a file name'));
    return undefined;
  }
  let maxBytes = DEFAULT_TRACE_MAX_BYTES;
  if (values['trace-max-bytes'] !== undefined) {
    const size = parseSize(values['trace-max-bytes']);
    if ('error' in size) errors.push(new ConfigError(COMMAND_LINE, '--trace-max-bytes', size.error));
    else maxBytes = size.bytes;
  }
  let rawBytes = 0;
  const raw = values['trace-raw-bytes'];
  if (raw !== undefined) {
    if (/^\d+$/.test(raw) && Number(raw) <= MAX_TRACE_RAW_BYTES) rawBytes = Number(raw);
    else
      errors.push(
        new ConfigError(
          COMMAND_LINE,
          '--trace-raw-bytes',
          `must be a number of bytes from 0 to ${MAX_TRACE_RAW_BYTES}, got ${JSON.stringify(raw)}`,
        ),
      );
  }
  return { path: resolve(cwd, path), maxBytes, rawBytes };
}
