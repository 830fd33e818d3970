/**
 * Field: the typed encoding of saved state. Round trips of every kind, the
 * exact bytes of a small value (the format is documented, so it is pinned),
 * and bytes from outside (truncated, oversized, random) refused with a
 * StateError naming the field, never anything else.
 */
import { describe, expect, it } from 'vitest';
import { decodeField, encodeField, Field, StateError } from '../../../server/state/fields.js';
import { crc32c } from '../../../server/state/crc32c.js';
import { mulberry32 } from '../../helpers/random.js';

const sample = Field.struct({
  flag: Field.bool(),
  byte: Field.u8(),
  half: Field.u16(),
  word: Field.u32(),
  signed: Field.i32(),
  wide: Field.u64(),
  real: Field.f64(),
  mode: Field.oneOf(['idle', 'busy', 'dead']),
  blob: Field.bytes(16),
  name: Field.string(32),
  list: Field.array(Field.struct({ a: Field.u16(), b: Field.optional(Field.u8()) }), 4),
});

const value = {
  flag: true,
  byte: 0xab,
  half: 0xbeef,
  word: 0xdeadbeef,
  signed: -5,
  wide: 0x1122334455667788n,
  real: 1.5,
  mode: 'busy' as const,
  blob: Uint8Array.of(1, 2, 3),
  name: 'gpio ✓',
  list: [
    { a: 1, b: 2 },
    { a: 3, b: undefined },
  ],
};

describe('Field', () => {
  it('round-trips every kind of field', () => {
    expect(decodeField(sample, encodeField(sample, value))).toEqual(value);
  });

  it('round-trips values larger than the encoder starts with (it grows)', () => {
    const f = Field.struct({ head: Field.u32(), data: Field.bytes(1 << 16), tail: Field.u64() });
    const v = { head: 7, data: new Uint8Array(5000).fill(0x5a), tail: 0xfedcba9876543210n };
    expect(decodeField(f, encodeField(f, v))).toEqual(v);
  });

  it('encodes a struct as its fields in order, little-endian, with u32 length prefixes', () => {
    const f = Field.struct({ a: Field.u16(), b: Field.bytes(4), c: Field.bool() });
    expect([...encodeField(f, { a: 0x0102, b: Uint8Array.of(9, 8), c: true })]).toEqual([
      0x02, 0x01, 2, 0, 0, 0, 9, 8, 1,
    ]);
  });

  it('shape names types and fields but not maxima', () => {
    expect(sample.shape).toBe(
      '{flag:bool,byte:u8,half:u16,word:u32,signed:i32,wide:u64,real:f64,mode:oneOf(idle|busy|dead),blob:bytes,name:string,list:{a:u16,b:u8?}[]}',
    );
    expect(Field.bytes(1).shape).toBe(Field.bytes(1000).shape);
    expect(Field.array(Field.u8(), 2).maxBytes).toBe(4 + 2);
  });

  it('saving a value that does not fit its field is a TypeError naming the field', () => {
    expect(() => encodeField(sample, { ...value, half: 0x10000 })).toThrow(/half: 65536 is not a u16/);
    expect(() => encodeField(sample, { ...value, blob: new Uint8Array(17) })).toThrow(/blob: 17 bytes exceed/);
    expect(() => encodeField(sample, { ...value, list: [{ a: -1, b: undefined }] })).toThrow(/list\[0\]\.a/);
    expect(() => encodeField(sample, { ...value, mode: 'gone' as 'busy' })).toThrow(/mode: "gone" is not one of/);
  });

  it('refuses truncated bytes, trailing bytes and out-of-range values with a StateError naming the field', () => {
    const bytes = encodeField(sample, value);
    for (let cut = 0; cut < bytes.byteLength; cut++) {
      expect(() => decodeField(sample, bytes.subarray(0, cut))).toThrow(StateError);
    }
    const longer = new Uint8Array(bytes.byteLength + 1);
    longer.set(bytes);
    expect(() => decodeField(sample, longer)).toThrow(/1 bytes after the end/);
    const badBool = bytes.slice();
    badBool[0] = 2;
    expect(() => decodeField(sample, badBool)).toThrow(/flag: 2 is not a boolean/);
  });

  it('checks a length against its maximum and the bytes left before allocating', () => {
    const f = Field.struct({ data: Field.bytes(8), items: Field.array(Field.u32(), 1 << 20) });
    const huge = Uint8Array.of(0xff, 0xff, 0xff, 0xff);
    expect(() => decodeField(f, huge)).toThrow(/data: length 4294967295 exceeds its maximum 8/);
    const manyItems = Uint8Array.of(0, 0, 0, 0, 0x00, 0x00, 0x10, 0x00);
    expect(() => decodeField(f, manyItems)).toThrow(/items: 1048576 items but 0 bytes left/);
  });

  it('random bytes only ever decode to a value or fail with StateError', () => {
    const next = mulberry32(0x5eed);
    let decoded = 0;
    for (let i = 0; i < 5000; i++) {
      const bytes = new Uint8Array(next() % 80);
      for (let j = 0; j < bytes.length; j++) bytes[j] = next() & 0xff;
      try {
        decodeField(sample, bytes);
        decoded++;
      } catch (err) {
        expect(err).toBeInstanceOf(StateError);
      }
    }
    expect(decoded).toBeLessThan(5000);
  });

  it('refuses field names that would change an object prototype', () => {
    expect(() => Field.struct({ ['__proto__']: Field.u8() })).toThrow(RangeError);
  });
});

describe('crc32c', () => {
  it('is CRC-32C (Castagnoli)', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
  });
});
