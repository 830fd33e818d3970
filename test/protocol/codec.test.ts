/**
 * The shared codec: the header, fixed-layout structs, and every decoder fed
 * random bytes. Each command's round trip sits in its group's test file
 * (version, dma, device, regions, region-access, irqs, dma-access, features,
 * migration).
 */
import { describe, expect, it } from 'vitest';
import * as P from '../../protocol/index.js';
import { defineStruct } from '../../protocol/struct.js';

const { HeaderFlag } = P;

describe('header', () => {
  it('round-trips and rejects short input', () => {
    const h = { id: 0xfffe, command: 9, size: 1234, flags: HeaderFlag.TYPE_REPLY | HeaderFlag.ERROR, error: 22 };
    expect(P.decodeHeader(P.encodeHeader(h))).toEqual(h);
    expect(() => P.decodeHeader(new Uint8Array(15))).toThrow(P.ProtocolError);
    const e = P.decodeHeader(P.encodeErrorReply(7, 3, 2));
    expect(e).toEqual({ id: 7, command: 3, size: 16, flags: HeaderFlag.TYPE_REPLY | HeaderFlag.ERROR, error: 2 });
  });
});

describe('decoders are total', () => {
  const decoders = [
    P.decodeVersion,
    P.decodeDmaMapRequest,
    P.decodeDmaUnmapRequest,
    P.decodeDeviceInfo,
    P.decodeRegionInfoRequest,
    P.decodeRegionInfoReply,
    P.decodeRegionIoFdsRequest,
    P.decodeRegionIoFdsReply,
    P.decodeIrqInfo,
    P.decodeSetIrqsRequest,
    P.decodeRegionReadRequest,
    P.decodeRegionReadReply,
    P.decodeRegionWriteRequest,
    P.decodeRegionWriteMultiRequest,
    P.decodeDmaReadRequest,
    P.decodeDmaReadReply,
    P.decodeDmaWriteRequest,
    P.decodeDmaWriteReply,
    P.decodeDeviceFeature,
    P.decodeMigDataReadRequest,
    P.decodeMigDataReadReply,
    P.decodeMigDataWriteRequest,
    P.decodeHeader,
  ] as ((m: Uint8Array) => unknown)[];
  it('throw only ProtocolError on random input', () => {
    let seed = 12345;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) & 0xff;
    for (let n = 0; n < 1000; n++) {
      const len = rnd() % 140;
      const buf = new Uint8Array(len).map(() => (rnd() < 200 ? rnd() % 4 : rnd()));
      for (const d of decoders) {
        try {
          d(buf);
        } catch (err) {
          expect(err).toBeInstanceOf(P.ProtocolError);
        }
      }
    }
  });
});

describe('fixed-layout structs', () => {
  it('defineStruct packs u32/u64 fields in order, little-endian, and wraps like DataView', () => {
    const S = defineStruct<{ a: number; b: bigint; c: number }>({ a: 'u32', b: 'u64', c: 'u32' });
    expect(S.size).toBe(16);
    const bytes = new Uint8Array(20);
    const view = new DataView(bytes.buffer);
    S.write(view, 2, { a: -1, b: -2n, c: 0x1_0000_0005 });
    expect([...bytes.subarray(2, 18)]).toEqual([
      0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 5, 0, 0, 0,
    ]);
    expect(S.read(view, 2)).toEqual({ a: 0xffffffff, b: 0xfffffffffffffffen, c: 5 });
    expect(() => S.decode(new Uint8Array(16 + 15), 'S')).toThrow(P.ProtocolError);
  });
});
