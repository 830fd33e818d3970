/**
 * Replacing the device behind a live connection (DeviceServer.replaceDevice):
 * what a hot reload (`vfio-user-ts serve --watch`) does with each new
 * generation of a device module, without the client noticing.
 *
 * Between two requests (Connection.between: requests arriving meanwhile wait
 * and are answered once, by the new device): quiesce the old device, save its
 * state, construct the new one, load the state into it, hand over what
 * belongs to the client (DMA mappings, interrupt eventfds, the memfds behind
 * memory-backed BARs, which the client mmapped: PciDevice.exchangeClientResources),
 * attach it to the client, resume it, close the old one. The client keeps its
 * socket, its mappings and its eventfds; the guest sees no reset.
 *
 * Any failure before the new device runs leaves the old one as it was,
 * resumed and serving, and rejects with a ReplaceDeviceError naming the stage
 * and the cause.
 */
import type { Logger } from 'pino';
import type { Connection } from './connection/index.js';
import type { Endpoint } from './endpoint.js';
import type { PciDevice } from './pci/device.js';
import { MigrationState, migrationStateName } from '../protocol/features.js';

/** Where a replacement failed (ReplaceDeviceError.stage). */
export type ReplaceDeviceStage =
  /** The current device or the new one is not a PciDevice (only those have state to carry). */
  | 'not-replaceable'
  /** A client request did not complete in time, or a migration or dirty-page logging is in progress: nothing was touched. */
  | 'busy'
  /** The old device's quiesce threw. */
  | 'quiesce'
  /** The old device's state could not be saved. */
  | 'save'
  /** The factory of the new device threw. */
  | 'construct'
  /** The new device refused the old one's state (another layout, kind or version: a StateError). */
  | 'state'
  /** The new device's BARs or interrupt vectors differ from the old one's. */
  | 'handover'
  /** The new device's resume threw (what it took was given back to the old one). */
  | 'resume';

/** A replacement failed; the old device runs on. `cause` is the original error. */
export class ReplaceDeviceError extends Error {
  override readonly name = 'ReplaceDeviceError';
  constructor(
    readonly stage: ReplaceDeviceStage,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`replace device (${stage}): ${message}`, options);
  }
}

/**
 * The new device (a PciDevice), or a function that makes it (called once the
 * old one is quiesced and saved). Typed as an Endpoint because a device
 * module's factory returns one; anything but a PciDevice is refused.
 */
export type NextDevice = Endpoint | (() => Endpoint | Promise<Endpoint>);

export interface ReplaceDeviceOptions {
  /** How long to wait for a client request in progress before giving up with 'busy' (default 3000 ms). */
  busyTimeoutMs?: number;
}

/** What a replacement did (figures for logs and benchmarks). */
export interface ReplaceDeviceResult {
  /** The device now served. */
  device: PciDevice;
  /** The device it replaced (closed: its resources went to `device`). */
  previous: PciDevice;
  /** Size of the state carried over. */
  stateBytes: number;
  /** Whether a client was attached (its requests waited at most `heldMs`). */
  connected: boolean;
  /** How long client requests were held back: from the old device's quiesce to the new one's resume. */
  heldMs: number;
}

/**
 * A PciDevice, recognised by its methods rather than `instanceof`: a device
 * module may be loaded through another path to the same library (tsx from
 * the sources, dist/ from the package) than the daemon's own copy.
 */
function isReplaceable(value: unknown): value is PciDevice {
  if (value === null || typeof value !== 'object') return false;
  const d = value as Record<string, unknown>;
  return ['quiesce', 'resume', 'saveState', 'loadState', 'exchangeClientResources', 'whenIdle', 'close'].every(
    (m) => typeof d[m] === 'function',
  );
}

function why(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Replace `current` by `next` (see the file comment), with `conn` the
 * attached client's connection, if any. Returns the new device; on failure
 * the old one is resumed and a ReplaceDeviceError thrown.
 */
export async function replaceDevice(
  current: Endpoint,
  next: NextDevice,
  conn: Connection | undefined,
  log: Logger,
  options: ReplaceDeviceOptions = {},
): Promise<ReplaceDeviceResult> {
  if (!isReplaceable(current)) throw new ReplaceDeviceError('not-replaceable', `${current.name} is not a PciDevice`);
  const old = current;
  const live = conn !== undefined && conn.state !== 'closing' && conn.state !== 'closed';
  const swap = (): Promise<ReplaceDeviceResult> => swapDevices(old, next, live ? conn : undefined, log);
  if (!live) return swap();
  try {
    return await conn.between(swap, options.busyTimeoutMs ?? 3000);
  } catch (err) {
    if (err instanceof ReplaceDeviceError) throw err;
    throw new ReplaceDeviceError('busy', why(err), { cause: err });
  }
}

async function swapDevices(
  old: PciDevice,
  next: NextDevice,
  conn: Connection | undefined,
  log: Logger,
): Promise<ReplaceDeviceResult> {
  const t0 = performance.now();
  /** Give up: the old device runs again, the new one (if any) is closed. */
  const fail = async (stage: ReplaceDeviceStage, err: unknown, dev?: PciDevice): Promise<never> => {
    dev?.close();
    try {
      await old.resume();
    } catch (again) {
      log.error({ err: again }, 'replace device: the old device did not resume');
    }
    if (err instanceof ReplaceDeviceError) throw err;
    throw new ReplaceDeviceError(stage, why(err), { cause: err });
  };
  await old.whenIdle(); // a reset in progress finishes first
  // A migration the client drives owns the device's state (and its dirty log lives in
  // the old device's DMA space): no reload in the middle of one.
  if (old.migration && old.migration.state !== MigrationState.RUNNING)
    throw new ReplaceDeviceError('busy', `a migration is in progress (${migrationStateName(old.migration.state)})`);
  if (old.dma.dirtyLogPageSize !== 0) throw new ReplaceDeviceError('busy', 'the client is logging dirty pages');
  try {
    await old.quiesce();
  } catch (err) {
    return fail('quiesce', err);
  }
  let bytes: Uint8Array;
  try {
    bytes = await old.saveState();
  } catch (err) {
    return fail('save', err);
  }
  let dev: PciDevice;
  try {
    const made: unknown = typeof next === 'function' ? await next() : next;
    if (!isReplaceable(made)) {
      // Close what it made if it can be closed (an Endpoint of another kind).
      (made as { close?: () => void } | undefined)?.close?.();
      throw new ReplaceDeviceError('not-replaceable', 'the new device is not a PciDevice');
    }
    dev = made;
  } catch (err) {
    return fail('construct', err);
  }
  if (dev === old) return fail('not-replaceable', new Error('the new device is the current one'));
  try {
    await dev.quiesce();
    await dev.loadState(bytes);
  } catch (err) {
    return fail('state', err, dev);
  }
  try {
    old.exchangeClientResources(dev);
  } catch (err) {
    return fail('handover', err, dev);
  }
  conn?.replaceEndpoint(dev);
  try {
    await dev.resume();
  } catch (err) {
    // Give the client's resources back and serve the old device again.
    old.exchangeClientResources(dev);
    conn?.replaceEndpoint(old);
    return fail('resume', err, dev);
  }
  old.close();
  const heldMs = performance.now() - t0;
  log.info({ stateBytes: bytes.byteLength, heldMs: Math.round(heldMs * 10) / 10 }, 'device replaced');
  return { device: dev, previous: old, stateBytes: bytes.byteLength, connected: conn !== undefined, heldMs };
}
