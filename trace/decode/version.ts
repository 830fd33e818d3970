/** VERSION: major, minor and the capabilities JSON (compacted when it parses, else as sent, cut at JSON_SHOWN). */
import { JSON_SHOWN, type TraceFields } from '../fields.js';
import { u16 } from './bytes.js';

const utf8 = new TextDecoder('utf-8', { fatal: false });

export function traceVersion(msg: Uint8Array, out: TraceFields): void {
  out.major = u16(msg, 16);
  out.minor = u16(msg, 18);
  if (msg.byteLength <= 20) return;
  const end = msg.indexOf(0, 20);
  const text = utf8.decode(msg.subarray(20, end < 0 ? Math.min(msg.byteLength, 20 + JSON_SHOWN * 4) : end));
  let json = text;
  try {
    json = JSON.stringify(JSON.parse(text));
  } catch {
    out.jsonError = 'not valid JSON';
  }
  if (end < 0) out.jsonError = 'not NUL-terminated';
  out.caps = json.length > JSON_SHOWN ? `${json.slice(0, JSON_SHOWN)}...(+${json.length - JSON_SHOWN} chars)` : json;
}
