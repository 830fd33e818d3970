/**
 * A protocol tracer: a connection observer (server/connection/observer.ts,
 * matched by shape: trace/ sits below server/) that turns every event into a
 * TraceRecord and hands it to a sink: a logger (one decoded line per message)
 * or a capture file. Each event's cost is bounded (data shown is cut, lists
 * are cut, bitmaps are counted up to a limit), and a sink that throws is the
 * observer's caller's to catch (the connection logs it and goes on).
 */
import {
  dmaRecord,
  formatRecord,
  messageRecord,
  stateRecord,
  type RecordOptions,
  type TraceRecord,
  type TracedDmaRequest,
  type TracedMessage,
  type TracedState,
} from './record.js';

export interface TracerOptions extends RecordOptions {
  /** Also record connection state changes (default true). */
  states?: boolean;
}

export class ProtocolTracer {
  readonly #sink: (record: TraceRecord) => void;
  readonly #options: RecordOptions;
  readonly #states: boolean;

  constructor(sink: (record: TraceRecord) => void, options: TracerOptions = {}) {
    this.#sink = sink;
    this.#options = { dev: options.dev, rawBytes: options.rawBytes };
    this.#states = options.states ?? true;
  }

  message(e: TracedMessage): void {
    this.#sink(messageRecord(e, this.#options));
  }

  dmaRequest(e: TracedDmaRequest): void {
    this.#sink(dmaRecord(e, this.#options));
  }

  state(e: TracedState): void {
    if (this.#states) this.#sink(stateRecord(e, this.#options));
  }
}

/** The part of a pino logger the log tracer uses. */
export interface DebugLog {
  debug(fields: object, message: string): void;
}

/**
 * A tracer that logs one decoded line per message at debug level, with the
 * command, id, `result` ('ok' or the errno of a client's request; absent for
 * our own DMA requests, which say `server: true`) and the errno's name as
 * fields (a connection's child logger adds the device and connection). State
 * changes are left to the connection's own info lines.
 */
export function logTracer(log: DebugLog): ProtocolTracer {
  return new ProtocolTracer(
    (r) => {
      if (r.kind === 'state') return;
      const fields = {
        cmd: r.cmd,
        id: r.id,
        ...(r.kind === 'message' ? { result: r.errno ?? 'ok' } : { server: true }),
        ...(r.error !== undefined && { error: r.error }),
      };
      log.debug(fields, formatRecord(r));
    },
    { states: false },
  );
}
