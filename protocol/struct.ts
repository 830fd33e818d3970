/**
 * Fixed-layout message structs: a list of little-endian u32/u64 fields packed
 * in order, read from and written to a message's DataView at a byte offset.
 * One layout serves a message's encoder and decoder, so the two cannot disagree.
 */
import { HEADER_SIZE } from './constants.js';
import { requirePayload, type NewMessage } from './header.js';

/** The wire type of each field of `T`: bigint fields are u64, number fields u32. */
export type StructLayout<T> = { readonly [K in keyof T]-?: T[K] extends bigint ? 'u64' : 'u32' };

export interface Struct<T> {
  /** Bytes the struct takes on the wire. */
  readonly size: number;
  /** The fields at byte `at` of `view` (the caller checked that `size` bytes are there). */
  read(view: DataView, at: number): T;
  /** Store `value` at byte `at` of `view`; u32 fields are taken mod 2^32, u64 fields mod 2^64. */
  write(view: DataView, at: number, value: T): void;
  /** Write `value` at the start of `message`'s payload; returns the message bytes. */
  encodeInto(message: NewMessage, value: T): Uint8Array;
  /** The struct at the start of `msg`'s payload; EINVAL (ProtocolError) naming `what` if the payload is shorter. */
  decode(msg: Uint8Array, what: number | string): T;
}

/**
 * A struct with the fields of `T` in the order `layout` lists them, e.g.
 * `defineStruct<IrqInfoMessage>({ argsz: 'u32', flags: 'u32', index: 'u32', count: 'u32' })`.
 * The type checks that every field of `T` has its wire type; the order is the wire order.
 */
export function defineStruct<T extends { [K in keyof T]: number | bigint }>(layout: StructLayout<T>): Struct<T> {
  const fields: Array<{ name: string; u64: boolean; offset: number }> = [];
  let size = 0;
  for (const [name, type] of Object.entries<'u32' | 'u64'>(layout)) {
    fields.push({ name, u64: type === 'u64', offset: size });
    size += type === 'u64' ? 8 : 4;
  }
  const struct: Struct<T> = {
    size,
    read(view, at) {
      const out: Record<string, number | bigint> = {};
      for (const f of fields)
        out[f.name] = f.u64 ? view.getBigUint64(at + f.offset, true) : view.getUint32(at + f.offset, true);
      return out as T;
    },
    write(view, at, value) {
      const v = value as Record<string, number | bigint>;
      for (const f of fields) {
        if (f.u64) view.setBigUint64(at + f.offset, v[f.name] as bigint, true);
        else view.setUint32(at + f.offset, (v[f.name] as number) >>> 0, true);
      }
    },
    encodeInto(message, value) {
      struct.write(message.view, HEADER_SIZE, value);
      return message.bytes;
    },
    decode(msg, what) {
      return struct.read(requirePayload(msg, size, what), HEADER_SIZE);
    },
  };
  return struct;
}
