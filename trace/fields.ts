/**
 * What a decoder makes of a message: an ordered record of JSON values (no
 * bigints: addresses are '0x...' strings), printed as `key=value` pairs.
 * The same record is what a capture file stores, so `vfio-user-ts trace`
 * prints a capture exactly as `--trace` printed the session.
 */

export type TraceValue = string | number | boolean | null | TraceValue[] | { [key: string]: TraceValue };
export type TraceFields = Record<string, TraceValue>;

/** Data bytes a line shows (the rest is counted, not printed): bounds every line's cost. */
const DATA_SHOWN = 16;
/** Entries of a list a line shows (WRITE_MULTI writes, sparse areas, DMA logging ranges). */
const ENTRIES_SHOWN = 8;
/** Characters of a VERSION JSON a line shows. */
export const JSON_SHOWN = 512;

/** '0x1f' (a bigint or a non-negative number). */
export function hex(value: bigint | number): string {
  return `0x${value.toString(16)}`;
}

/** The first `max` bytes as contiguous hex ('01000000'), then '...(+N)' for the bytes not shown. */
export function dataHex(bytes: Uint8Array, max = DATA_SHOWN): string {
  const n = Math.min(bytes.byteLength, max);
  let s = '';
  for (let i = 0; i < n; i++) s += bytes[i]!.toString(16).padStart(2, '0');
  return n < bytes.byteLength ? `${s}...(+${bytes.byteLength - n})` : s;
}

/** The first ENTRIES_SHOWN items mapped, and a count of the others. */
export function bounded<T>(items: readonly T[], map: (item: T) => TraceValue): TraceValue[] {
  const out = items.slice(0, ENTRIES_SHOWN).map(map);
  if (items.length > ENTRIES_SHOWN) out.push(`+${items.length - ENTRIES_SHOWN} more`);
  return out;
}

/** A value as a line shows it: strings bare, lists in [], records in {}, all on one line. */
export function formatValue(value: TraceValue): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `[${value.map(formatValue).join(', ')}]`;
  if (typeof value === 'object')
    return `{${Object.entries(value)
      .map(([k, v]) => `${k}=${formatValue(v)}`)
      .join(' ')}}`;
  if (typeof value === 'string') return /[\s]/.test(value) || value === '' ? JSON.stringify(value) : value;
  return String(value);
}

/** 'k=v k=v' (an absent field is left out). */
export function formatFields(fields: TraceFields): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${formatValue(v)}`)
    .join(' ');
}
