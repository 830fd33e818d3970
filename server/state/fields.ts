/**
 * Typed, bounded fields for saved state: a device declares the shape of its
 * state with `Field` (`Field.struct({ outputs: Field.u16(), ... })`), and the
 * same declaration types `save()`/`load()`, encodes the value and decodes it.
 *
 * The encoding is the library's own, fixed and little-endian, independent of
 * the Node.js version (no v8.serialize, no JSON numbers):
 *
 * | field           | bytes                                                   |
 * | --------------- | ------------------------------------------------------- |
 * | bool            | u8 0 or 1                                               |
 * | u8, u16, u32    | 1, 2, 4 bytes unsigned                                  |
 * | i32             | 4 bytes two's complement                                |
 * | u64             | 8 bytes unsigned (a bigint)                             |
 * | f64             | 8 bytes IEEE 754, finite                                |
 * | oneOf([...])    | u8 index into the list                                  |
 * | bytes(max)      | u32 length, then the bytes                              |
 * | string(max)     | u32 length, then UTF-8 (max counts bytes)               |
 * | array(item,max) | u32 count, then the items                               |
 * | optional(f)     | u8 0 (absent) or 1, then f                              |
 * | struct({...})   | the fields in declaration order, no names on the wire   |
 *
 * Decoding is driven by the declaration alone, so bytes from a client (or
 * another process) can only produce values of the declared shape: every
 * length is checked against its maximum and against the bytes left before
 * anything is allocated, and a malformed stream is a StateError (EINVAL)
 * naming the field. Saving checks the device's value the same way (a value
 * that does not fit is a TypeError naming the field: a bug in the device).
 */
import { Errno } from '../../protocol/constants.js';
import { VfioUserError } from '../../protocol/errors.js';

/** Saved state that cannot be loaded: malformed, too large, of another device or version. errno EINVAL. */
export class StateError extends VfioUserError {
  constructor(message: string) {
    super(Errno.EINVAL, message);
    this.name = 'StateError';
  }
}

/** Where the encoder puts bytes (grows as needed). */
export class StateWriter {
  #bytes = new Uint8Array(256);
  #view = new DataView(this.#bytes.buffer);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  /** Make room for `n` more bytes and return where they go (it may replace #bytes and #view: call it first). */
  #room(n: number): number {
    const at = this.#length;
    if (at + n > this.#bytes.length) {
      let size = this.#bytes.length * 2;
      while (size < at + n) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.#bytes.subarray(0, at));
      this.#bytes = grown;
      this.#view = new DataView(grown.buffer);
    }
    this.#length += n;
    return at;
  }

  u8(v: number): void {
    const at = this.#room(1);
    this.#view.setUint8(at, v);
  }
  u16(v: number): void {
    const at = this.#room(2);
    this.#view.setUint16(at, v, true);
  }
  u32(v: number): void {
    const at = this.#room(4);
    this.#view.setUint32(at, v >>> 0, true);
  }
  i32(v: number): void {
    const at = this.#room(4);
    this.#view.setInt32(at, v, true);
  }
  u64(v: bigint): void {
    const at = this.#room(8);
    this.#view.setBigUint64(at, v, true);
  }
  f64(v: number): void {
    const at = this.#room(8);
    this.#view.setFloat64(at, v, true);
  }
  bytes(b: Uint8Array): void {
    const at = this.#room(b.byteLength); // first: it may replace #bytes
    this.#bytes.set(b, at);
  }

  /** The bytes written (a copy). */
  finish(): Uint8Array {
    return this.#bytes.slice(0, this.#length);
  }
}

/** A bounds-checked cursor over saved bytes; every failure is a StateError naming the field. */
export class StateReader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  #at = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Bytes not read yet. */
  get left(): number {
    return this.#bytes.byteLength - this.#at;
  }

  #take(n: number, path: string): number {
    if (n > this.left) throw new StateError(`state: ${path}: needs ${n} bytes, ${this.left} left`);
    const at = this.#at;
    this.#at += n;
    return at;
  }

  u8(path: string): number {
    return this.#view.getUint8(this.#take(1, path));
  }
  u16(path: string): number {
    return this.#view.getUint16(this.#take(2, path), true);
  }
  u32(path: string): number {
    return this.#view.getUint32(this.#take(4, path), true);
  }
  i32(path: string): number {
    return this.#view.getInt32(this.#take(4, path), true);
  }
  u64(path: string): bigint {
    return this.#view.getBigUint64(this.#take(8, path), true);
  }
  f64(path: string): number {
    return this.#view.getFloat64(this.#take(8, path), true);
  }
  /** `n` bytes (a copy: the value outlives the stream's buffer, even when that is a Buffer, whose slice() is a view). */
  bytes(n: number, path: string): Uint8Array {
    const at = this.#take(n, path);
    return new Uint8Array(this.#bytes.subarray(at, at + n));
  }

  /** Throw unless every byte was read. */
  end(path: string): void {
    if (this.left !== 0) throw new StateError(`state: ${path}: ${this.left} bytes after the end`);
  }
}

/**
 * One field of a saved state, holding values of type T. Made by the `Field`
 * functions; `FieldValue<typeof f>` is T.
 */
export interface StateField<T> {
  /**
   * What decides the encoding (types, names and order; not the maxima), e.g.
   * `{outputs:u16,irqEnabled:bool}`. Its checksum is saved with the state, so
   * a state whose fields changed without a new version number is refused.
   */
  readonly shape: string;
  /** The largest encoding of a value, in bytes. */
  readonly maxBytes: number;
  /** Encode `value` (TypeError naming `path` when it does not fit the field). */
  write(w: StateWriter, value: T, path: string): void;
  /** Decode a value (StateError naming `path` when the bytes do not fit the field). */
  read(r: StateReader, path: string): T;
}

/** The type of value a field holds. */
export type FieldValue<F> = F extends StateField<infer T> ? T : never;

/** The value type of a struct of fields. */
export type StructValue<S extends Record<string, StateField<unknown>>> = { [K in keyof S]: FieldValue<S[K]> };

/** A value the device gave, for a message (its type may not be what the fields say). */
function describe(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

function bad(path: string, what: string): never {
  throw new TypeError(`state: ${path}: ${what}`);
}

function checkMax(max: number, what: string): number {
  if (!Number.isSafeInteger(max) || max < 0 || max > 0xffffffff)
    throw new RangeError(`Field.${what}: bad maximum ${max}`);
  return max;
}

function uint(name: string, bytes: 1 | 2 | 4): StateField<number> {
  const max = bytes === 4 ? 0xffffffff : (1 << (8 * bytes)) - 1;
  return {
    shape: name,
    maxBytes: bytes,
    write(w, v, path) {
      if (!Number.isInteger(v) || v < 0 || v > max) bad(path, `${describe(v)} is not a ${name}`);
      if (bytes === 1) w.u8(v);
      else if (bytes === 2) w.u16(v);
      else w.u32(v);
    },
    read(r, path) {
      return bytes === 1 ? r.u8(path) : bytes === 2 ? r.u16(path) : r.u32(path);
    },
  };
}

/** Length-prefixed bytes with the prefix checked against `max` and the bytes left. */
function readLength(r: StateReader, max: number, unit: number, path: string): number {
  const n = r.u32(path);
  if (n > max) throw new StateError(`state: ${path}: length ${n} exceeds its maximum ${max}`);
  if (n * unit > r.left) throw new StateError(`state: ${path}: length ${n} but ${r.left} bytes left`);
  return n;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** Field declarations for DeviceState schemas (see the table above for their encodings). */
export const Field = {
  bool(): StateField<boolean> {
    return {
      shape: 'bool',
      maxBytes: 1,
      write(w, v, path) {
        if (typeof v !== 'boolean') bad(path, `${describe(v)} is not a boolean`);
        w.u8(v ? 1 : 0);
      },
      read(r, path) {
        const b = r.u8(path);
        if (b > 1) throw new StateError(`state: ${path}: ${b} is not a boolean`);
        return b === 1;
      },
    };
  },
  u8: (): StateField<number> => uint('u8', 1),
  u16: (): StateField<number> => uint('u16', 2),
  u32: (): StateField<number> => uint('u32', 4),
  i32(): StateField<number> {
    return {
      shape: 'i32',
      maxBytes: 4,
      write(w, v, path) {
        if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) bad(path, `${describe(v)} is not an i32`);
        w.i32(v);
      },
      read: (r, path) => r.i32(path),
    };
  },
  u64(): StateField<bigint> {
    return {
      shape: 'u64',
      maxBytes: 8,
      write(w, v, path) {
        if (typeof v !== 'bigint' || v < 0n || v > 0xffffffffffffffffn) bad(path, `${describe(v)} is not a u64 bigint`);
        w.u64(v);
      },
      read: (r, path) => r.u64(path),
    };
  },
  f64(): StateField<number> {
    return {
      shape: 'f64',
      maxBytes: 8,
      write(w, v, path) {
        if (typeof v !== 'number' || !Number.isFinite(v)) bad(path, `${describe(v)} is not a finite number`);
        w.f64(v);
      },
      read(r, path) {
        const v = r.f64(path);
        if (!Number.isFinite(v)) throw new StateError(`state: ${path}: not a finite number`);
        return v;
      },
    };
  },
  /** One of a fixed list of strings (at most 256), saved as its index: reordering the list changes the shape. */
  oneOf<const V extends string>(values: readonly V[]): StateField<V> {
    if (values.length === 0 || values.length > 256 || new Set(values).size !== values.length)
      throw new RangeError('Field.oneOf: 1..256 distinct values');
    return {
      shape: `oneOf(${values.join('|')})`,
      maxBytes: 1,
      write(w, v, path) {
        const i = values.indexOf(v);
        if (i < 0) bad(path, `${describe(v)} is not one of ${values.join(', ')}`);
        w.u8(i);
      },
      read(r, path) {
        const i = r.u8(path);
        if (i >= values.length)
          throw new StateError(`state: ${path}: index ${i} is not one of ${values.length} values`);
        return values[i]!;
      },
    };
  },
  /** Bytes, at most `max` of them (the value is a copy on load). */
  bytes(max: number): StateField<Uint8Array> {
    checkMax(max, 'bytes');
    return {
      shape: 'bytes',
      maxBytes: 4 + max,
      write(w, v, path) {
        if (!(v instanceof Uint8Array)) bad(path, 'is not a Uint8Array');
        if (v.byteLength > max) bad(path, `${v.byteLength} bytes exceed its maximum ${max}`);
        w.u32(v.byteLength);
        w.bytes(v);
      },
      read(r, path) {
        return r.bytes(readLength(r, max, 1, path), path);
      },
    };
  },
  /** A string of at most `maxBytes` UTF-8 bytes. */
  string(maxBytes: number): StateField<string> {
    checkMax(maxBytes, 'string');
    return {
      shape: 'string',
      maxBytes: 4 + maxBytes,
      write(w, v, path) {
        if (typeof v !== 'string') bad(path, 'is not a string');
        const b = utf8.encode(v);
        if (b.byteLength > maxBytes) bad(path, `${b.byteLength} UTF-8 bytes exceed its maximum ${maxBytes}`);
        w.u32(b.byteLength);
        w.bytes(b);
      },
      read(r, path) {
        const b = r.bytes(readLength(r, maxBytes, 1, path), path);
        try {
          return utf8Decoder.decode(b);
        } catch {
          throw new StateError(`state: ${path}: not UTF-8`);
        }
      },
    };
  },
  /** At most `maxLength` items of `item`. */
  array<T>(item: StateField<T>, maxLength: number): StateField<T[]> {
    checkMax(maxLength, 'array');
    return {
      shape: `${item.shape}[]`,
      maxBytes: 4 + maxLength * item.maxBytes,
      write(w, v, path) {
        if (!Array.isArray(v)) bad(path, 'is not an array');
        if (v.length > maxLength) bad(path, `${v.length} items exceed its maximum ${maxLength}`);
        w.u32(v.length);
        v.forEach((x, i) => item.write(w, x, `${path}[${i}]`));
      },
      read(r, path) {
        const n = r.u32(path);
        if (n > maxLength) throw new StateError(`state: ${path}: ${n} items exceed its maximum ${maxLength}`);
        // Every item but an empty struct takes at least one byte: a count the bytes left cannot hold is refused at once.
        if (item.maxBytes > 0 && n > r.left)
          throw new StateError(`state: ${path}: ${n} items but ${r.left} bytes left`);
        const out: T[] = [];
        for (let i = 0; i < n; i++) out.push(item.read(r, `${path}[${i}]`));
        return out;
      },
    };
  },
  /** `field`, or undefined. */
  optional<T>(field: StateField<T>): StateField<T | undefined> {
    return {
      shape: `${field.shape}?`,
      maxBytes: 1 + field.maxBytes,
      write(w, v, path) {
        w.u8(v === undefined ? 0 : 1);
        if (v !== undefined) field.write(w, v, path);
      },
      read(r, path) {
        const present = r.u8(path);
        if (present > 1) throw new StateError(`state: ${path}: presence byte ${present}`);
        return present === 1 ? field.read(r, path) : undefined;
      },
    };
  },
  /** Named fields, saved in the order given (names are not on the wire; they are in the shape). */
  struct<S extends Record<string, StateField<unknown>>>(fields: S): StateField<StructValue<S>> {
    const entries = Object.entries(fields);
    for (const [name] of entries) {
      if (name === '__proto__' || /^\d/.test(name)) throw new RangeError(`Field.struct: field name '${name}'`);
    }
    return {
      shape: `{${entries.map(([name, f]) => `${name}:${f.shape}`).join(',')}}`,
      maxBytes: entries.reduce((n, [, f]) => n + f.maxBytes, 0),
      write(w, v, path) {
        const value: unknown = v;
        if (typeof value !== 'object' || value === null) bad(path, 'is not an object');
        const obj = value as Record<string, unknown>;
        for (const [name, f] of entries) f.write(w, obj[name], path === '' ? name : `${path}.${name}`);
      },
      read(r, path) {
        const out: Record<string, unknown> = {};
        for (const [name, f] of entries) out[name] = f.read(r, path === '' ? name : `${path}.${name}`);
        return out as StructValue<S>;
      },
    };
  },
} as const;

/** Encode `value` with `field`. */
export function encodeField<T>(field: StateField<T>, value: T): Uint8Array {
  const w = new StateWriter();
  field.write(w, value, '');
  return w.finish();
}

/** Decode `bytes` with `field`: every byte must be used. StateError otherwise. */
export function decodeField<T>(field: StateField<T>, bytes: Uint8Array): T {
  const r = new StateReader(bytes);
  const v = field.read(r, '');
  r.end('(end)');
  return v;
}
