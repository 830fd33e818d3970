/**
 * VERSION capabilities: the JSON object `{"capabilities": {...}}` both sides
 * send, parsed with validation (libvfio-user's rules: wrong types or ranges are
 * EINVAL) and formatted back (with a size budget, because QEMU drops the stream
 * when the VERSION reply is longer than its request).
 */
import { Errno, Limits } from './constants.js';
import { ProtocolError } from './errors.js';

export interface MigrationCapability {
  /** Dirty-bitmap page size; a multiple of 4096. */
  pgsize: number;
  maxBitmapSize?: number;
}

export interface TwinSocketCapability {
  supported: boolean;
  fdIndex?: number;
}

/** The capabilities of VERSION (not PCI capabilities), spec names in camelCase. Missing keys take the spec defaults. */
export interface VersionCapabilities {
  /** max_msg_fds: fds the sender accepts per message (spec default 1). */
  maxMsgFds: number;
  /** max_data_xfer_size: largest data transfer the sender accepts (default 1 MiB). */
  maxDataXferSize: number;
  /** pgsizes: bitmask of supported DMA page sizes (default 4096). */
  pgsizes: number;
  /** max_dma_maps (default 65535). */
  maxDmaMaps: number;
  migration?: MigrationCapability;
  twinSocket?: TwinSocketCapability;
  /** write_multiple: REGION_WRITE_MULTI supported. */
  writeMultiple: boolean;
}

/** The spec's defaults (what a peer that sends no JSON gets). */
const DEFAULT_CAPABILITIES: Readonly<VersionCapabilities> = Object.freeze({
  maxMsgFds: Limits.DEFAULT_CLIENT_MAX_MSG_FDS,
  maxDataXferSize: Limits.MAX_DATA_XFER_SIZE,
  pgsizes: Limits.PGSIZE,
  maxDmaMaps: Limits.MAX_DMA_MAPS,
  writeMultiple: false,
});

/** Largest max_msg_fds libvfio-user accepts from a client. */
const MAX_PEER_MSG_FDS = 1024;

function bad(message: string): never {
  throw new ProtocolError(Errno.EINVAL, `capabilities: ${message}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function uint(obj: Record<string, unknown>, key: string, path: string): number | undefined {
  if (!(key in obj)) return undefined;
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad(`${path}${key} must be an unsigned integer`);
  return v;
}

/**
 * Parse and validate a capabilities JSON text (the NUL already stripped).
 * An empty string means "no JSON": spec defaults. Throws ProtocolError(EINVAL).
 */
export function parseCapabilities(json: string): VersionCapabilities {
  const caps: VersionCapabilities = { ...DEFAULT_CAPABILITIES };
  if (json.length === 0) return caps;
  let root: unknown;
  try {
    root = JSON.parse(json);
  } catch {
    bad('not valid JSON');
  }
  if (!isObject(root)) bad('JSON is not an object');
  if (!('capabilities' in root)) return caps;
  const c = root.capabilities;
  if (!isObject(c)) bad('"capabilities" is not an object');

  const fds = uint(c, 'max_msg_fds', '');
  if (fds !== undefined) {
    if (fds > MAX_PEER_MSG_FDS) bad(`max_msg_fds ${fds} > ${MAX_PEER_MSG_FDS}`);
    caps.maxMsgFds = fds;
  }
  const xfer = uint(c, 'max_data_xfer_size', '');
  if (xfer !== undefined) {
    if (xfer === 0) bad('max_data_xfer_size is 0');
    caps.maxDataXferSize = xfer;
  }
  const pgsizes = uint(c, 'pgsizes', '');
  if (pgsizes !== undefined) {
    if (pgsizes === 0 || pgsizes % 4096 !== 0) bad(`pgsizes ${pgsizes} is not a non-zero multiple of 4096`);
    caps.pgsizes = pgsizes;
  }
  const maps = uint(c, 'max_dma_maps', '');
  if (maps !== undefined) caps.maxDmaMaps = maps;
  if ('write_multiple' in c) {
    if (typeof c.write_multiple !== 'boolean') bad('write_multiple must be a boolean');
    caps.writeMultiple = c.write_multiple;
  }
  if ('migration' in c) {
    const m = c.migration;
    if (!isObject(m)) bad('migration is not an object');
    const pgsize = uint(m, 'pgsize', 'migration.');
    if (pgsize === undefined || pgsize === 0 || pgsize % 4096 !== 0)
      bad('migration.pgsize must be a non-zero multiple of 4096');
    const maxBitmapSize = uint(m, 'max_bitmap_size', 'migration.');
    caps.migration = maxBitmapSize === undefined ? { pgsize } : { pgsize, maxBitmapSize };
  }
  if ('twin_socket' in c) {
    const t = c.twin_socket;
    if (!isObject(t)) bad('twin_socket is not an object');
    if (typeof t.supported !== 'boolean') bad('twin_socket.supported must be a boolean');
    const fdIndex = uint(t, 'fd_index', 'twin_socket.');
    caps.twinSocket = fdIndex === undefined ? { supported: t.supported } : { supported: t.supported, fdIndex };
  }
  return caps;
}

/** Capability keys in the order they are dropped when a size budget forces it (least important first). */
const OPTIONAL_ORDER = [
  'write_multiple',
  'max_dma_maps',
  'pgsizes',
  'migration',
  'twin_socket',
  'max_data_xfer_size',
  'max_msg_fds',
] as const;

/** The JSON keys and values, in the order they are written. */
function toJsonEntries(caps: Partial<VersionCapabilities>): Map<string, unknown> {
  const c = new Map<string, unknown>();
  if (caps.maxMsgFds !== undefined) c.set('max_msg_fds', caps.maxMsgFds);
  if (caps.maxDataXferSize !== undefined) c.set('max_data_xfer_size', caps.maxDataXferSize);
  if (caps.pgsizes !== undefined) c.set('pgsizes', caps.pgsizes);
  if (caps.maxDmaMaps !== undefined) c.set('max_dma_maps', caps.maxDmaMaps);
  if (caps.migration) {
    c.set(
      'migration',
      caps.migration.maxBitmapSize === undefined
        ? { pgsize: caps.migration.pgsize }
        : { pgsize: caps.migration.pgsize, max_bitmap_size: caps.migration.maxBitmapSize },
    );
  }
  if (caps.twinSocket) {
    c.set(
      'twin_socket',
      caps.twinSocket.fdIndex === undefined
        ? { supported: caps.twinSocket.supported }
        : { supported: caps.twinSocket.supported, fd_index: caps.twinSocket.fdIndex },
    );
  }
  if (caps.writeMultiple) c.set('write_multiple', true);
  return c;
}

/**
 * Format `{"capabilities":{...}}`. With `maxBytes` (UTF-8 length of the JSON,
 * without the NUL), optional keys are dropped, least important first, until it
 * fits; `{}`-style output is the floor. Keys with an undefined value are omitted.
 */
export function formatCapabilities(caps: Partial<VersionCapabilities>, maxBytes = Infinity): string {
  const c = toJsonEntries(caps);
  const json = (): string => JSON.stringify({ capabilities: Object.fromEntries(c) });
  let text = json();
  for (const key of OPTIONAL_ORDER) {
    if (text.length <= maxBytes) break;
    c.delete(key);
    text = json();
  }
  if (text.length > maxBytes) text = '{}';
  return text;
}
