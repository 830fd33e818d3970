/**
 * Capture files (`serve --trace-file F`, read by `vfio-user-ts trace F`):
 * JSON lines, a header first ({"format":"vfio-user-ts-trace","version":1,...}),
 * then one TraceRecord per line. The writer is bounded: past `maxBytes` it
 * writes an end record and stops; records that arrive while the disk lags
 * by more than MAX_BUFFERED bytes are dropped and counted, not queued.
 */
import { createReadStream, createWriteStream, openSync, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { TraceRecord } from './record.js';

export const CAPTURE_FORMAT = 'vfio-user-ts-trace';
export const CAPTURE_VERSION = 1;

export interface CaptureHeader {
  format: typeof CAPTURE_FORMAT;
  version: number;
  /** When the capture started (ISO 8601). */
  started: string;
  /** Who wrote it ('vfio-user-ts 0.1.0'). */
  writer?: string;
}

/** The last line of a capture that stopped early: why, and how many records were lost until then. */
export interface CaptureEnd {
  kind: 'end';
  t: number;
  reason: string;
  dropped: number;
}

/** Bytes waiting for the disk after which records are dropped rather than queued. */
const MAX_BUFFERED = 16 << 20;

export interface CaptureWriterOptions {
  /** Bytes the file may reach (default 256 MiB). */
  maxBytes?: number | undefined;
  /** The header's `writer`. */
  writer?: string | undefined;
}

export class CaptureWriter {
  readonly path: string;
  readonly #stream: WriteStream;
  readonly #maxBytes: number;
  #bytes = 0;
  #dropped = 0;
  #full = false;
  #closed: Promise<void> | undefined;

  /** Create (or truncate) `path`; throws at once if it cannot be opened. */
  constructor(path: string, options: CaptureWriterOptions = {}) {
    this.path = path;
    this.#maxBytes = options.maxBytes ?? 256 << 20;
    const fd = openSync(path, 'w', 0o640);
    this.#stream = createWriteStream('', { fd });
    this.#stream.on('error', () => {
      this.#full = true; // a disk error ends the capture; the daemon goes on
    });
    const header: CaptureHeader = {
      format: CAPTURE_FORMAT,
      version: CAPTURE_VERSION,
      started: new Date().toISOString(),
      ...(options.writer !== undefined && { writer: options.writer }),
    };
    this.#line(JSON.stringify(header));
  }

  /** Records dropped so far (disk lagging, or the size limit reached). */
  get dropped(): number {
    return this.#dropped;
  }

  write(record: TraceRecord): void {
    if (this.#full || this.#closed) {
      this.#dropped++;
      return;
    }
    if (this.#stream.writableLength > MAX_BUFFERED) {
      this.#dropped++;
      return;
    }
    const line = JSON.stringify(record);
    // Room for the end record (well under 200 bytes) is kept.
    if (this.#bytes + line.length + 1 + 200 > this.#maxBytes) {
      this.#dropped++;
      this.#end(`size limit of ${this.#maxBytes} bytes reached`);
      return;
    }
    this.#line(line);
  }

  #line(text: string): void {
    const bytes = Buffer.byteLength(text) + 1;
    this.#bytes += bytes;
    this.#stream.write(`${text}\n`);
  }

  #end(reason: string): void {
    if (this.#full) return;
    this.#full = true;
    const end: CaptureEnd = { kind: 'end', t: Date.now(), reason, dropped: this.#dropped };
    this.#line(JSON.stringify(end));
  }

  /** Flush and close (an end record notes records dropped). Idempotent. */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      if (this.#dropped > 0) this.#end('closed');
      this.#stream.end(() => resolve());
      this.#stream.once('error', () => resolve());
    });
    return this.#closed;
  }
}

/** What `readCapture` yields: the header first, then each record (or end) in order. */
export type CaptureLine =
  | { kind: 'header'; header: CaptureHeader }
  | { kind: 'record'; record: TraceRecord }
  | { kind: 'end'; end: CaptureEnd }
  | { kind: 'bad'; line: number; why: string };

/** Read a capture file line by line (streaming: captures can be large). Throws if it is not a capture. */
export async function* readCapture(path: string): AsyncGenerator<CaptureLine> {
  const fd = openSync(path, 'r');
  const input = createReadStream('', { fd });
  const lines = createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  try {
    for await (const text of lines) {
      n++;
      if (n === 1) {
        const header = parseHeader(text);
        if (typeof header === 'string') throw new Error(`${path}: not a vfio-user-ts capture (${header})`);
        yield { kind: 'header', header };
        continue;
      }
      if (text.trim() === '') continue;
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        yield { kind: 'bad', line: n, why: 'not JSON (a capture cut short?)' };
        continue;
      }
      if (typeof value !== 'object' || value === null || !('kind' in value)) {
        yield { kind: 'bad', line: n, why: 'not a record' };
      } else if (value.kind === 'end') {
        yield { kind: 'end', end: value as CaptureEnd };
      } else if (value.kind === 'message' || value.kind === 'dma' || value.kind === 'state') {
        yield { kind: 'record', record: value as TraceRecord };
      } else {
        yield { kind: 'bad', line: n, why: `unknown record kind ${JSON.stringify(value.kind)}` };
      }
    }
    if (n === 0) throw new Error(`${path}: empty file, not a vfio-user-ts capture`);
  } finally {
    lines.close();
    input.destroy(); // closes the fd
  }
}

/** The header, or why the line is not one. */
function parseHeader(text: string): CaptureHeader | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'the first line is not JSON';
  }
  if (typeof value !== 'object' || value === null) return 'the first line is not a header';
  const h = value as Partial<CaptureHeader>;
  if (h.format !== CAPTURE_FORMAT) return `format is ${JSON.stringify(h.format)}`;
  if (h.version !== CAPTURE_VERSION)
    return `version ${JSON.stringify(h.version)}, this reader knows ${CAPTURE_VERSION}`;
  return h as CaptureHeader;
}
