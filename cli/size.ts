/**
 * Byte sizes as people write them on a command line or in a config file:
 * a plain number of bytes, or a number with a binary suffix (K, M, G, T,
 * optionally followed by "iB" or "B": `1G`, `512MiB`, `4096`). Suffixes are
 * powers of 1024, as in QEMU's `size=` options.
 */
const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Parse a size; returns an error message instead of throwing. */
export function parseSize(value: unknown): { bytes: number } | { error: string } {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value <= 0)
      return { error: `must be a positive whole number of bytes, got ${value}` };
    return { bytes: value };
  }
  if (typeof value !== 'string')
    return { error: `must be a size such as "1G" or a number of bytes, got ${describe(value)}` };
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(value);
  if (!match) return { error: `must be a size such as "1G", "512M" or "4096", got ${JSON.stringify(value)}` };
  const [, amount, unit = ''] = match;
  // The pattern lets through only the units UNITS names; a NaN would fail the check below anyway.
  const bytes = Number(amount) * (UNITS[unit.toLowerCase()] ?? NaN);
  if (!Number.isSafeInteger(bytes) || bytes <= 0)
    return { error: `must be a positive whole number of bytes, got ${JSON.stringify(value)}` };
  return { bytes };
}

/** Short human form of a byte count (1 GiB, 512 MiB, 4096 B). */
export function formatSize(bytes: number): string {
  for (const [suffix, unit] of [
    ['TiB', 2 ** 40],
    ['GiB', 2 ** 30],
    ['MiB', 2 ** 20],
    ['KiB', 2 ** 10],
  ] as const) {
    if (bytes >= unit && bytes % unit === 0) return `${bytes / unit} ${suffix}`;
  }
  return `${bytes} B`;
}

/** A value's kind and content for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean' || value === undefined)
    return `${typeof value} ${String(value)}`;
  return typeof value; // a symbol or a function: never from JSON or the command line
}
