/**
 * A pino logger that keeps what it writes in memory: the lines (parsed) and
 * their byte count, for tests that assert what (and how much) we log.
 */
import { Writable } from 'node:stream';
import { pino, type Level, type Logger } from 'pino';

interface LogLine {
  level: number;
  msg: string;
  kind?: string;
  suppressed?: number;
  [field: string]: unknown;
}

export interface CapturedLog {
  log: Logger;
  readonly lines: LogLine[];
  /** Bytes written so far (the NDJSON text, newlines included). */
  bytes(): number;
}

export function captureLog(level: Level = 'info'): CapturedLog {
  const lines: LogLine[] = [];
  let bytes = 0;
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      bytes += chunk.byteLength;
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as LogLine);
      done();
    },
  });
  return { log: pino({ level }, sink), lines, bytes: () => bytes };
}

/** pino writes through a stream: let queued writes land. */
export function logFlushed(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
