/**
 * DeviceState: how a device declares the part of its state the library does
 * not own (registers, queues, timers' deadlines...): a kind, a version, the
 * fields (server/state/fields.ts), save() and load(), and the older versions
 * it still reads. The library saves the rest (config space, MSI-X, interrupts,
 * BAR memory: server/pci/pci-state.ts) and puts both in one envelope
 * (server/state/envelope.ts).
 *
 * The device section of the envelope:
 *
 * | bytes | what                                                        |
 * | ----- | ----------------------------------------------------------- |
 * | 1     | length n of the kind (1..64)                                |
 * | n     | the kind, ASCII                                             |
 * | 4     | version (u32, >= 1)                                         |
 * | 4     | CRC-32C of the fields' shape at that version                |
 * | rest  | the value, encoded by the fields of that version            |
 */
import { crc32c } from './crc32c.js';
import { decodeField, encodeField, StateError, StateReader, StateWriter, type StateField } from './fields.js';

/** An older version of a device's state that a newer module still loads. */
export interface OlderDeviceState<T> {
  /** Its version number (below the current one). */
  readonly version: number;
  /** Its fields, as that version saved them. */
  readonly schema: StateField<unknown>;
  /** Turn a decoded value of that version into the current one (throw to refuse it). */
  upgrade(old: unknown): T;
}

/**
 * What a device saves and loads besides the library's part. Declare it with
 * `defineDeviceState` (which checks it and infers the types):
 *
 * ```ts
 * const regsV2 = Field.struct({ scratch: Field.u32(), mode: Field.oneOf(['fast', 'slow']) });
 * const state = defineDeviceState({
 *   kind: 'acme-widget',
 *   version: 2,
 *   schema: regsV2,
 *   save: () => ({ scratch, mode }),
 *   load: (s) => { scratch = s.scratch; mode = s.mode; },
 *   older: [olderState(1, Field.struct({ scratch: Field.u32() }), (v1) => ({ scratch: v1.scratch, mode: 'fast' as const }))],
 * });
 * new PciDevice({ ..., state });
 * ```
 */
export interface DeviceState<T> {
  /**
   * What device this state belongs to (1..64 printable ASCII characters, e.g.
   * 'pci-idio-16'). A state of another kind is refused, naming both.
   */
  readonly kind: string;
  /** The version this module saves (an integer >= 1). Bump it whenever the fields change. */
  readonly version: number;
  /** The fields of this version. */
  readonly schema: StateField<T>;
  /**
   * The device's state, taken while it is quiesced (no work in flight, see
   * PciDeviceOptions.quiesce). Return a value that holds no live objects of
   * the device (it is encoded at once, but keep it a snapshot anyway).
   */
  save(): T | Promise<T>;
  /**
   * Take over a saved state (already decoded, checked against the fields and
   * upgraded to this version) while the device is quiesced; it runs again
   * after resume. Check what the fields cannot express (a register's reserved
   * bits, an index within a table) before changing anything, and throw a
   * VfioUserError (or any Error) to refuse: the library then restores what
   * the device had (by load()ing the state it saved just before).
   */
  load(state: T): void | Promise<void>;
  /** Older versions this module still loads, each with its fields and an upgrade to the current value. */
  readonly older?: readonly OlderDeviceState<T>[];
  /** Largest encoded state accepted, in bytes (default: what the fields allow, at most 16 MiB). */
  readonly maxBytes?: number;
}

/** Default and ceiling of DeviceState.maxBytes. */
export const MAX_DEVICE_STATE_BYTES = 16 << 20;

const KIND = /^[\x21-\x7e]{1,64}$/;

function checkVersion(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 1 || v > 0xffffffff)
    throw new RangeError(`${what}: version ${v} must be an integer >= 1`);
}

/**
 * Check a state declaration (throws RangeError for a bad kind, version,
 * duplicate or too-new older version) and return it, typed by its fields.
 */
export function defineDeviceState<T>(state: DeviceState<T>): DeviceState<T> {
  if (!KIND.test(state.kind)) throw new RangeError(`DeviceState: kind '${state.kind}' must be 1..64 printable ASCII`);
  checkVersion(state.version, `DeviceState ${state.kind}`);
  const seen = new Set<number>();
  for (const o of state.older ?? []) {
    checkVersion(o.version, `DeviceState ${state.kind} older`);
    if (o.version >= state.version)
      throw new RangeError(`DeviceState ${state.kind}: older version ${o.version} is not below ${state.version}`);
    if (seen.has(o.version)) throw new RangeError(`DeviceState ${state.kind}: older version ${o.version} twice`);
    seen.add(o.version);
  }
  if (state.maxBytes !== undefined && (!Number.isSafeInteger(state.maxBytes) || state.maxBytes < 0))
    throw new RangeError(`DeviceState ${state.kind}: bad maxBytes ${state.maxBytes}`);
  return state;
}

/** An older version: its fields and how to turn its value into the current one (types inferred from `schema`). */
export function olderState<O, T>(version: number, schema: StateField<O>, upgrade: (old: O) => T): OlderDeviceState<T> {
  return { version, schema, upgrade: (old) => upgrade(old as O) };
}

/** The checksum of a shape, saved with the state. */
function shapeChecksum(field: StateField<unknown>): number {
  return crc32c(new TextEncoder().encode(field.shape));
}

/** Versions a declaration reads, for messages: "1..3" or "2". */
function readableVersions(def: DeviceState<unknown>): string {
  const all = [def.version, ...(def.older ?? []).map((o) => o.version)].sort((a, b) => a - b);
  return all.length === 1 ? `${all[0]}` : all.join(', ');
}

/** The largest device section `def` accepts (kind, version, checksum, value). */
export function deviceSectionMaxBytes(def: DeviceState<unknown>): number {
  const fields = Math.max(def.schema.maxBytes, ...(def.older ?? []).map((o) => o.schema.maxBytes));
  const value = Math.min(def.maxBytes ?? MAX_DEVICE_STATE_BYTES, fields, MAX_DEVICE_STATE_BYTES);
  return 1 + 64 + 8 + value;
}

/** Save the device's state into a device section. */
export async function saveDeviceSection(def: DeviceState<unknown>): Promise<Uint8Array> {
  const value = await def.save();
  const encoded = encodeField(def.schema, value);
  const max = Math.min(def.maxBytes ?? MAX_DEVICE_STATE_BYTES, MAX_DEVICE_STATE_BYTES);
  if (encoded.byteLength > max)
    throw new RangeError(`DeviceState ${def.kind}: saved ${encoded.byteLength} bytes, more than its maximum ${max}`);
  const w = new StateWriter();
  const kind = new TextEncoder().encode(def.kind);
  w.u8(kind.byteLength);
  w.bytes(kind);
  w.u32(def.version);
  w.u32(shapeChecksum(def.schema));
  w.bytes(encoded);
  return w.finish();
}

/**
 * Decode a device section for `def`: its kind, version and shape checked,
 * the value decoded with that version's fields and upgraded to the current
 * version. StateError (EINVAL) naming both sides when it does not fit; the
 * device is not touched.
 */
export function decodeDeviceSection<T>(def: DeviceState<T>, bytes: Uint8Array): T {
  const r = new StateReader(bytes);
  const kindLength = r.u8('device.kind');
  if (kindLength < 1 || kindLength > 64) throw new StateError(`state: device kind of ${kindLength} characters`);
  const kindBytes = r.bytes(kindLength, 'device.kind');
  if (kindBytes.some((b) => b < 0x21 || b > 0x7e)) throw new StateError('state: device kind is not printable ASCII');
  const kind = String.fromCharCode(...kindBytes);
  const version = r.u32('device.version');
  const checksum = r.u32('device.shape');
  const value = r.bytes(r.left, 'device.value');
  if (kind !== def.kind) throw new StateError(`state is for a device of kind '${kind}', this device is '${def.kind}'`);
  const max = Math.min(def.maxBytes ?? MAX_DEVICE_STATE_BYTES, MAX_DEVICE_STATE_BYTES);
  if (value.byteLength > max)
    throw new StateError(`state of '${kind}': ${value.byteLength} bytes, more than this module accepts (${max})`);
  if (version > def.version) {
    throw new StateError(
      `state of '${kind}' is version ${version}, newer than this module's version ${def.version} (it reads ${readableVersions(def)})`,
    );
  }
  const layoutError = (): StateError =>
    new StateError(
      `state of '${kind}' version ${version} does not have the fields this module knows as version ${version} (the fields changed without a new version number)`,
    );
  if (version === def.version) {
    if (checksum !== shapeChecksum(def.schema)) throw layoutError();
    return decodeField(def.schema, value);
  }
  const older = def.older?.find((o) => o.version === version);
  if (!older) {
    throw new StateError(
      `state of '${kind}' is version ${version}, which this module (version ${def.version}) no longer reads (it reads ${readableVersions(def)})`,
    );
  }
  if (checksum !== shapeChecksum(older.schema)) throw layoutError();
  const old = decodeField(older.schema, value);
  try {
    return older.upgrade(old);
  } catch (err) {
    throw new StateError(
      `state of '${kind}': upgrading version ${version} to ${def.version} failed: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}
