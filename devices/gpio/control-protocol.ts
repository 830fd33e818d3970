/**
 * The GPIO control socket's protocol: JSON lines over a UNIX stream socket next
 * to the device socket (control-server.ts serves it, control-client.ts and
 * control-cli.ts talk to it).
 *
 * Wire format (one JSON object per line, UTF-8, at most MAX_LINE bytes):
 *
 *   -> {"op":"get"}                          <- {"ok":true,"state":{...}}
 *   -> {"op":"set","line":3,"value":1}        <- {"ok":true,"state":{...}}
 *   -> {"op":"set","inputs":65535}            <- {"ok":true,"state":{...}}
 *   -> {"op":"watch"}                         <- {"ok":true,"state":{...}}, then events:
 *        {"event":"outputs","outputs":255,"previous":0}
 *        {"event":"inputs","inputs":1,"previous":0}
 *        {"event":"interrupt"}   {"event":"reset"}
 *   any error                                 <- {"ok":false,"error":"..."}
 *
 * A request may carry an "id", echoed in its reply. `state` is an Idio16State.
 */
import type { Idio16State } from './idio16.js';

/** Longest request line accepted (bytes, newline excluded); longer ones get an error and the connection is closed. */
export const MAX_LINE = 4096;
/** Most control connections served at once; more are refused. */
export const MAX_CLIENTS = 32;
/** A watcher that lets this many bytes of events pile up unread is disconnected. */
export const MAX_UNREAD = 1 << 20;

/** A request on the control socket. */
export type GpioControlRequest =
  | { op: 'get'; id?: unknown }
  | { op: 'set'; line: number; value: boolean | number; id?: unknown }
  | { op: 'set'; inputs: number; id?: unknown }
  | { op: 'watch'; id?: unknown };

/** A reply (or, after watch, an event) on the control socket. */
export type GpioControlMessage =
  | { ok: true; state: Idio16State; id?: unknown }
  | { ok: false; error: string; id?: unknown }
  | { event: 'outputs'; outputs: number; previous: number }
  | { event: 'inputs'; inputs: number; previous: number }
  | { event: 'interrupt' }
  | { event: 'reset' };

/** The path of the control socket for a device socket: `<socketPath>.control`. */
export function defaultControlPath(deviceSocketPath: string): string {
  return `${deviceSocketPath}.control`;
}

/** An error's message. */
export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
