/**
 * One trace record per event: a client's request with our answer, one of our
 * DMA requests with the client's answer, or a connection state change. A
 * record is plain JSON (what a capture file holds, one per line) and prints
 * as one line (what --trace logs and `vfio-user-ts trace` shows).
 */
import { HEADER_SIZE, HeaderFlag, commandName } from '../protocol/constants.js';
import { decodeReply, decodeRequest } from './decode/index.js';
import { dataHex, formatFields, formatValue, type TraceFields } from './fields.js';
import { errnoName } from './names.js';

export interface MessageRecord {
  kind: 'message';
  /** Wall-clock time, ms since the epoch. */
  t: number;
  /** The device's name (a capture of a daemon holds many). */
  dev?: string;
  conn: number;
  cmd: string;
  id: number;
  /** The request asked for no reply (QEMU's posted writes). */
  noReply?: true;
  /** fds that came with the request. */
  fds?: number;
  request: TraceFields;
  /** The reply's fields (undefined: an error reply, or none was sent). */
  reply?: TraceFields;
  replyFds?: number;
  /** The errno's name ('EINVAL') of an error answer. */
  error?: string;
  errno?: number;
  reason?: string;
  /** Handler time, ms. */
  ms: number;
  /** The first bytes of the request and reply, hex (--trace-raw-bytes). */
  raw?: { request: string; reply?: string };
}

export interface DmaRecord {
  kind: 'dma';
  t: number;
  dev?: string;
  conn: number;
  cmd: string;
  id: number;
  request: TraceFields;
  reply?: TraceFields;
  error?: string;
  errno?: number;
  ms: number;
  raw?: { request: string; reply?: string };
}

export interface StateRecord {
  kind: 'state';
  t: number;
  dev?: string;
  conn: number;
  state: string;
  reason?: string;
}

export type TraceRecord = MessageRecord | DmaRecord | StateRecord;

/** What a message event carries (server/connection's MessageEvent has these fields, and more). */
export interface TracedMessage {
  readonly conn: number;
  readonly command: number;
  readonly id: number;
  readonly flags: number;
  readonly fds: number;
  readonly errno: number;
  readonly reason: string | undefined;
  readonly replyFds: number;
  readonly durationMs: number;
  readonly request: Uint8Array;
  readonly reply: Uint8Array | undefined;
}

/** What a server-to-client DMA event carries (server/connection's DmaRequestEvent). */
export interface TracedDmaRequest {
  readonly conn: number;
  readonly command: number;
  readonly id: number;
  readonly errno: number;
  readonly durationMs: number;
  readonly request: Uint8Array;
  readonly reply: Uint8Array | undefined;
}

/** What a state event carries (server/connection's ConnectionStateEvent). */
export interface TracedState {
  readonly conn: number;
  readonly state: string;
  readonly reason: string | undefined;
}

export interface RecordOptions {
  dev?: string | undefined;
  /** Keep the first N bytes of each message, hex (0 or undefined: none). */
  rawBytes?: number | undefined;
}

function raw(request: Uint8Array, reply: Uint8Array | undefined, max: number): { request: string; reply?: string } {
  return reply ? { request: dataHex(request, max), reply: dataHex(reply, max) } : { request: dataHex(request, max) };
}

/** Rounded to microseconds: enough for a reader, short in a file. */
function ms(duration: number): number {
  return Math.round(duration * 1000) / 1000;
}

/** An error reply's errno (0: the reply is not an error). */
function replyErrno(reply: Uint8Array | undefined): number {
  if (!reply || reply.byteLength < HEADER_SIZE) return 0;
  const flags = reply[8]! | (reply[9]! << 8);
  if (!(flags & HeaderFlag.ERROR)) return 0;
  return (reply[12]! | (reply[13]! << 8) | (reply[14]! << 16) | (reply[15]! << 24)) >>> 0;
}

export function messageRecord(e: TracedMessage, options: RecordOptions = {}): MessageRecord {
  const r: MessageRecord = {
    kind: 'message',
    t: Date.now(),
    ...(options.dev !== undefined && { dev: options.dev }),
    conn: e.conn,
    cmd: commandName(e.command),
    id: e.id,
    ...((e.flags & HeaderFlag.NO_REPLY) !== 0 && { noReply: true as const }),
    ...(e.fds > 0 && { fds: e.fds }),
    request: decodeRequest(e.command, e.request),
    ms: ms(e.durationMs),
  };
  if (e.errno !== 0) {
    r.error = errnoName(e.errno);
    r.errno = e.errno;
    if (e.reason !== undefined) r.reason = e.reason;
  } else if (e.reply) {
    r.reply = decodeReply(e.command, e.reply);
    if (e.replyFds > 0) r.replyFds = e.replyFds;
  }
  if (options.rawBytes) r.raw = raw(e.request, e.reply, options.rawBytes);
  return r;
}

export function dmaRecord(e: TracedDmaRequest, options: RecordOptions = {}): DmaRecord {
  const r: DmaRecord = {
    kind: 'dma',
    t: Date.now(),
    ...(options.dev !== undefined && { dev: options.dev }),
    conn: e.conn,
    cmd: commandName(e.command),
    id: e.id,
    request: decodeRequest(e.command, e.request),
    ms: ms(e.durationMs),
  };
  const errno = e.errno || replyErrno(e.reply);
  if (errno !== 0) {
    r.error = errnoName(errno);
    r.errno = errno;
  } else if (e.reply) {
    r.reply = decodeReply(e.command, e.reply);
  }
  if (options.rawBytes) r.raw = raw(e.request, e.reply, options.rawBytes);
  return r;
}

export function stateRecord(e: TracedState, options: RecordOptions = {}): StateRecord {
  return {
    kind: 'state',
    t: Date.now(),
    ...(options.dev !== undefined && { dev: options.dev }),
    conn: e.conn,
    state: e.state,
    ...(e.reason !== undefined && { reason: e.reason }),
  };
}

/** The reply's fields that say something new (an echoed region, offset or count is left out). */
function newInReply(request: TraceFields, reply: TraceFields): TraceFields {
  const out: TraceFields = {};
  for (const [k, v] of Object.entries(reply)) {
    const asked = request[k];
    if (asked === undefined || formatValue(asked) !== formatValue(v)) out[k] = v;
  }
  return out;
}

/**
 * The record as one line: `CMD #id request-fields -> answer`, where the answer
 * is the reply's new fields ('ok' when there are none), the errno's name and
 * why, or 'no reply'. Our DMA requests start with 'server'.
 */
export function formatRecord(r: TraceRecord): string {
  if (r.kind === 'state') return `connection ${r.state}${r.reason !== undefined ? ` (${r.reason})` : ''}`;
  const request = formatFields(r.request);
  let line = `${r.kind === 'dma' ? 'server ' : ''}${r.cmd} #${r.id}${request ? ` ${request}` : ''}`;
  if (r.kind === 'message' && r.fds !== undefined) line += ` fds=${r.fds}`;
  if (r.error !== undefined) {
    line += ` -> ${r.error}`;
    if (r.kind === 'message' && r.reason !== undefined) line += ` (${r.reason})`;
  } else if (r.reply !== undefined) {
    const shown = formatFields(newInReply(r.request, r.reply));
    line += ` -> ${shown || 'ok'}`;
    if (r.kind === 'message' && r.replyFds !== undefined) line += ` fds=${r.replyFds}`;
  } else {
    line += r.kind === 'message' && r.noReply ? ' (no reply)' : ' -> no reply';
  }
  if (r.ms >= 1) line += ` [${r.ms.toFixed(1)} ms]`;
  return line;
}
