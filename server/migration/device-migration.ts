/**
 * DeviceMigration: a device's side of migration v2 (Endpoint.migration). It
 * walks the state machine (state-machine.ts), quiesces and resumes the
 * device on the way, produces the migration data in the saving states and
 * takes it in RESUMING, and passes dirty-page logging to the device's DmaSpace.
 *
 * The data is, by default, the device's saved-state envelope
 * (PciDevice.saveState, server/state/envelope.ts): taken on entering
 * STOP_COPY, read out in chunks, and on the destination gathered in RESUMING
 * (bounded by what the device can accept, its header checked as soon as it
 * arrives) and loaded, all or nothing, on RESUMING -> STOP. PRE_COPY carries
 * no data then (the state is small; the device keeps running). A device that
 * needs its own wire format (libvfio-user's samples/server, whose client
 * counts the bytes) supplies a MigrationDataStream and owns every byte.
 *
 * Step by step (each arc complete before the next; a failing arc undoes its
 * own part, and the walk then goes back to where the request started, or to
 * ERROR when even that fails):
 * - leaving the running states (RUNNING, PRE_COPY and P2P forms) for STOP or
 *   STOP_COPY: quiesce() (the device finishes or parks its work; DMA and
 *   interrupts are then held back by the library);
 * - entering STOP_COPY: the data is taken; entering PRE_COPY: pre-copy begins;
 * - entering RESUMING: a new load begins; RESUMING -> STOP: it completes;
 * - STOP -> RUNNING (or RUNNING_P2P): resume().
 */
import type { Logger } from 'pino';
import type { DmaSpace } from '../dma/dma-space.js';
import type { DirtyLogRange, MigrationEndpoint } from '../endpoint.js';
import { Errno } from '../../protocol/constants.js';
import { VfioUserError } from '../../protocol/errors.js';
import { MigrationFlag, MigrationState, migrationStateName } from '../../protocol/features.js';
import { ENVELOPE_HEADER_SIZE, envelopeLength } from '../state/envelope.js';
import { isRunningState, isSavingState, migrationPath } from './state-machine.js';

/** Which saving state the data is for. */
export type SavePhase = 'pre-copy' | 'stop-copy';

/**
 * A device that writes and reads the migration data itself, byte for byte
 * (libvfio-user's model: its migration callbacks). With it, the library's own
 * state (config space, interrupts, BAR memory) is NOT in the migration data:
 * use it only when the bytes on the wire must be exactly yours (to interoperate
 * with another implementation); otherwise declare a DeviceState.
 *
 * Every call comes while the client waits for the reply. The data written to
 * you comes from the client: check it as you would a register write.
 */
export interface MigrationDataStream {
  /**
   * PRE_COPY (the device still runs) or STOP_COPY (it is quiesced) was
   * entered: the next read() starts that phase's data from its beginning.
   * Throw to fail the state change (the state stays where it was).
   */
  beginSave(phase: SavePhase): void | Promise<void>;
  /** The next bytes of the phase's data, at most `max`; fewer than `max` (none at the end) means the data ends there. */
  read(max: number): Uint8Array | Promise<Uint8Array>;
  /** RESUMING was entered: forget anything written before. */
  beginLoad(): void | Promise<void>;
  /** Data from the client, in order. Throw a VfioUserError to refuse it (its errno is the reply's; EINVAL otherwise). */
  write(data: Uint8Array): void | Promise<void>;
  /**
   * RESUMING -> STOP: everything arrived. Check it and take it, or throw:
   * the change fails and the state stays RESUMING. Leave the device as it
   * was when you refuse (check everything before changing anything).
   */
  endLoad(): void | Promise<void>;
  /** Most bytes accepted in one RESUMING (default 16 MiB): more is EINVAL before write() sees them. */
  readonly maxLoadBytes?: number;
}

/** What DeviceMigration needs from the device (PciDevice provides it). */
export interface MigratableDevice {
  readonly log: Logger;
  readonly dma: DmaSpace;
  /** Stop starting work, finish or park what is in flight; then no DMA and no interrupts until resume(). Idempotent. */
  quiesce(): Promise<void>;
  /** Undo quiesce(). Idempotent. */
  resume(): Promise<void>;
  /** The saved-state envelope (the device is quiesced). */
  saveState(): Promise<Uint8Array>;
  /** Load an envelope, all or nothing (the device is quiesced). */
  loadState(bytes: Uint8Array): Promise<void>;
  /** Largest envelope loadState accepts. */
  readonly maxStateBytes: number;
  /** Resolves when no device reset is running (an FLR the guest started completes first). */
  whenIdle(): Promise<void>;
}

const DEFAULT_MAX_STREAM_LOAD = 16 << 20;
const EMPTY = new Uint8Array(0);
const { ERROR, RUNNING, STOP_COPY, RESUMING, PRE_COPY, PRE_COPY_P2P } = MigrationState;

function isPreCopy(state: number): boolean {
  return state === PRE_COPY || state === PRE_COPY_P2P;
}

/** Any failure as a VfioUserError (EIO for anything that carries no errno). */
function asVfioUserError(err: unknown, what: string): VfioUserError {
  if (err instanceof VfioUserError) return err;
  return new VfioUserError(Errno.EIO, `${what}: ${err instanceof Error ? err.message : String(err)}`);
}

export class DeviceMigration implements MigrationEndpoint {
  /** STOP_COPY and PRE_COPY. P2P is not offered: the spec marks its states "not used in vfio-user" (libvfio-user refuses them too). */
  readonly flags = MigrationFlag.STOP_COPY | MigrationFlag.PRE_COPY;
  readonly #dev: MigratableDevice;
  readonly #stream: MigrationDataStream | undefined;
  #state: number = RUNNING;
  /** The envelope being read out (saving states), and how far. */
  #saved: Uint8Array = EMPTY;
  #readAt = 0;
  /** The data gathered in RESUMING. */
  #chunks: Uint8Array[] = [];
  #loaded = 0;
  /** The envelope's length once its header arrived. */
  #expected: number | undefined;
  /** The load was refused on the way (bad header, too much data): every later write, and the STOP, fail with it. */
  #loadError: VfioUserError | undefined;

  constructor(dev: MigratableDevice, stream?: MigrationDataStream) {
    this.#dev = dev;
    this.#stream = stream;
  }

  get state(): number {
    return this.#state;
  }

  async setState(target: number): Promise<void> {
    await this.#dev.whenIdle();
    const from = this.#state;
    const path = migrationPath(from, target, this.flags);
    if (!path) {
      throw VfioUserError.invalid(
        `MIG_DEVICE_STATE: ${migrationStateName(from)} -> ${migrationStateName(target)} is not allowed`,
      );
    }
    for (const next of path) {
      try {
        await this.#step(this.#state, next);
        this.#state = next;
      } catch (err) {
        const error = asVfioUserError(err, `${migrationStateName(this.#state)} -> ${migrationStateName(next)}`);
        this.#dev.log.warn(
          { from: migrationStateName(this.#state), to: migrationStateName(next), err: error.message },
          'migration state change failed',
        );
        await this.#rollBack(from);
        throw error;
      }
      this.#dev.log.debug({ state: migrationStateName(next) }, 'migration state');
    }
  }

  /** After a failed step: walk back to `from`; ERROR (device quiesced) if that fails too. */
  async #rollBack(from: number): Promise<void> {
    if (this.#state === from) return;
    const back = migrationPath(this.#state, from, this.flags);
    try {
      if (!back) throw new Error('no way back');
      for (const s of back) {
        await this.#step(this.#state, s);
        this.#state = s;
      }
    } catch (err) {
      this.#dev.log.error({ err }, 'migration: cannot restore the previous state: ERROR (a device reset recovers)');
      this.#state = ERROR;
      this.#dropSave();
      this.#dropLoad();
      await this.#dev.quiesce().catch(() => undefined);
    }
  }

  /** One arc. Throws with nothing of the arc left done. */
  async #step(from: number, to: number): Promise<void> {
    const wasRunning = isRunningState(from);
    const willRun = isRunningState(to);
    if (from === RESUMING) await this.#endLoad();
    if (wasRunning && !willRun) await this.#dev.quiesce();
    try {
      if (to === STOP_COPY) await this.#beginSave('stop-copy');
      else if (isPreCopy(to) && !isPreCopy(from)) await this.#beginSave('pre-copy');
    } catch (err) {
      if (wasRunning) await this.#dev.resume();
      throw err;
    }
    if (!isSavingState(to)) this.#dropSave();
    if (to === RESUMING) await this.#beginLoad();
    if (!wasRunning && willRun) await this.#dev.resume();
  }

  async #beginSave(phase: SavePhase): Promise<void> {
    this.#readAt = 0;
    if (this.#stream) {
      await this.#stream.beginSave(phase);
      return;
    }
    // Pre-copy carries nothing: the whole state goes at stop-copy (a destination
    // gets the pre-copy data too, so it must not be a second copy of the state).
    this.#saved = phase === 'stop-copy' ? await this.#dev.saveState() : EMPTY;
  }

  #dropSave(): void {
    this.#saved = EMPTY;
    this.#readAt = 0;
  }

  async readData(max: number): Promise<Uint8Array> {
    if (!isSavingState(this.#state)) throw VfioUserError.invalid(`MIG_DATA_READ in ${migrationStateName(this.#state)}`);
    if (max === 0) return EMPTY;
    if (this.#stream) {
      const data = await this.#stream.read(max);
      if (!(data instanceof Uint8Array) || data.byteLength > max)
        throw new VfioUserError(Errno.EIO, `MIG_DATA_READ: the device's stream returned more than ${max} bytes`);
      return data;
    }
    const chunk = this.#saved.subarray(this.#readAt, this.#readAt + max);
    this.#readAt += chunk.byteLength;
    return chunk;
  }

  async #beginLoad(): Promise<void> {
    this.#dropLoad();
    if (this.#stream) await this.#stream.beginLoad();
  }

  #dropLoad(): void {
    this.#chunks = [];
    this.#loaded = 0;
    this.#expected = undefined;
    this.#loadError = undefined;
  }

  async writeData(data: Uint8Array): Promise<void> {
    if (this.#state !== RESUMING) throw VfioUserError.invalid(`MIG_DATA_WRITE in ${migrationStateName(this.#state)}`);
    if (this.#loadError) throw this.#loadError;
    if (data.byteLength === 0) return;
    if (this.#stream) {
      const max = this.#stream.maxLoadBytes ?? DEFAULT_MAX_STREAM_LOAD;
      if (this.#loaded + data.byteLength > max)
        throw VfioUserError.invalid(`MIG_DATA_WRITE: more than ${max} bytes of migration data`);
      this.#loaded += data.byteLength;
      try {
        await this.#stream.write(data);
      } catch (err) {
        throw err instanceof VfioUserError ? err : VfioUserError.invalid(`MIG_DATA_WRITE: ${String(err)}`);
      }
      return;
    }
    try {
      this.#gather(data);
    } catch (err) {
      this.#loadError = asVfioUserError(err, 'MIG_DATA_WRITE');
      this.#chunks = [];
      throw this.#loadError;
    }
  }

  /** Keep `data`, checking the envelope's header as soon as it is complete and never holding more than it announces. */
  #gather(data: Uint8Array): void {
    const after = this.#loaded + data.byteLength;
    if (this.#expected === undefined && after >= ENVELOPE_HEADER_SIZE) {
      this.#expected = envelopeLength(concat([...this.#chunks, data], ENVELOPE_HEADER_SIZE), this.#dev.maxStateBytes);
    }
    const limit = this.#expected ?? ENVELOPE_HEADER_SIZE;
    if (after > limit) throw VfioUserError.invalid(`MIG_DATA_WRITE: ${after} bytes, the state is ${limit}`);
    this.#chunks.push(new Uint8Array(data)); // a copy (a Buffer's slice() would be a view)
    this.#loaded = after;
  }

  async #endLoad(): Promise<void> {
    if (this.#stream) {
      await this.#stream.endLoad();
      this.#dropLoad();
      return;
    }
    if (this.#loadError) throw this.#loadError;
    if (this.#loaded === 0) throw VfioUserError.invalid('RESUMING -> STOP: no migration data arrived');
    if (this.#expected === undefined || this.#loaded < this.#expected) {
      throw VfioUserError.invalid(
        `RESUMING -> STOP: incomplete migration data (${this.#loaded} of ${this.#expected ?? '?'} bytes)`,
      );
    }
    await this.#dev.loadState(concat(this.#chunks, this.#loaded));
    this.#dropLoad();
  }

  /**
   * The device was reset (DEVICE_RESET, FLR, the client's disconnect): the
   * state machine is back at RUNNING and any data in either direction is
   * dropped. The device's reset path resumed it.
   */
  afterReset(): void {
    if (this.#state !== RUNNING)
      this.#dev.log.info({ from: migrationStateName(this.#state) }, 'migration state reset to RUNNING');
    this.#state = RUNNING;
    this.#dropSave();
    this.#dropLoad();
  }

  /** Whether the state machine holds the device stopped (STOP, STOP_COPY, RESUMING, ERROR). */
  get stopped(): boolean {
    return !isRunningState(this.#state);
  }

  startDirtyLogging(pageSize: bigint, ranges: readonly DirtyLogRange[]): void {
    this.#dev.dma.startDirtyLogging(pageSize, ranges);
  }

  stopDirtyLogging(): void {
    this.#dev.dma.stopDirtyLogging();
  }

  reportDirty(iova: bigint, length: bigint, pageSize: bigint): Uint8Array {
    return this.#dev.dma.reportDirty(iova, length, pageSize);
  }
}

/** The first `length` bytes of `chunks` as one array. */
function concat(chunks: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    if (at >= length) break;
    const n = Math.min(c.byteLength, length - at);
    out.set(c.subarray(0, n), at);
    at += n;
  }
  return out;
}
