/**
 * Logging: one pino root logger, with a child per device ({ device }) and per
 * connection ({ conn }). Levels: info = lifecycle (listen, connect, negotiate,
 * disconnect), debug = one line per message (like QEMU's trace events),
 * trace = hex dumps. Set LOG_LEVEL or pass `level`.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  /** Default: $LOG_LEVEL, else 'info'. */
  level?: LevelWithSilent | undefined;
  /** Human-readable output (pino-pretty, if installed); default: when stdout is a TTY. */
  pretty?: boolean | undefined;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? (process.env.LOG_LEVEL as LevelWithSilent | undefined) ?? 'info';
  const pretty = options.pretty ?? process.stdout.isTTY;
  if (pretty) {
    try {
      return pino({ level, transport: { target: 'pino-pretty', options: { colorize: true } } });
    } catch {
      // pino-pretty is a dev dependency: fall back to JSON.
    }
  }
  return pino({ level });
}

/** A logger that drops everything. */
export const silentLogger: Logger = pino({ level: 'silent' });

let shared: Logger | undefined;

/**
 * What a PciDevice or a DeviceServer logs through when given no `log`: one
 * JSON logger for the process, at LOG_LEVEL (default `warn`: problems show,
 * lifecycle lines do not), writing to stderr so a program's stdout stays its
 * own. Made on first use.
 */
export function defaultLogger(): Logger {
  if (shared) return shared;
  const env = process.env.LOG_LEVEL;
  const level =
    env !== undefined && Object.hasOwn(pino.levels.values, env) ? env : env === 'silent' ? 'silent' : 'warn';
  shared = pino({ level }, pino.destination({ fd: 2, sync: true }));
  return shared;
}
