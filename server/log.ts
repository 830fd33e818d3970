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

/** A logger that drops everything (library default when the caller passes none). */
export const silentLogger: Logger = pino({ level: 'silent' });
