import { describe, expect, it } from 'vitest';
import * as P from '../../protocol/index.js';
import { defineStruct } from '../../protocol/struct.js';

const { VfioUserCommand, HeaderFlag, RegionCap, RegionFlag } = P;

describe('header', () => {
  it('round-trips and rejects short input', () => {
    const h = { id: 0xfffe, command: 9, size: 1234, flags: HeaderFlag.TYPE_REPLY | HeaderFlag.ERROR, error: 22 };
    expect(P.decodeHeader(P.encodeHeader(h))).toEqual(h);
    expect(() => P.decodeHeader(new Uint8Array(15))).toThrow(P.ProtocolError);
    const e = P.decodeHeader(P.encodeErrorReply(7, 3, 2));
    expect(e).toEqual({ id: 7, command: 3, size: 16, flags: HeaderFlag.TYPE_REPLY | HeaderFlag.ERROR, error: 2 });
  });
});

describe('capabilities', () => {
  it('parses QEMU’s request and applies defaults', () => {
    const c = P.parseCapabilities('{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true,"migration":{"pgsize":4096,"max_bitmap_size":268435456}}}');
    expect(c).toMatchObject({ maxMsgFds: 16, maxDataXferSize: 1 << 20, pgsizes: 4096, maxDmaMaps: 65535, writeMultiple: true, migration: { pgsize: 4096, maxBitmapSize: 268435456 } });
    expect(P.parseCapabilities('')).toMatchObject({ maxMsgFds: 1, maxDataXferSize: 1 << 20, writeMultiple: false });
    expect(P.parseCapabilities('{"other":1}').maxMsgFds).toBe(1);
  });
  it.each([
    'nope', '[]', '{"capabilities":3}', '{"capabilities":{"max_msg_fds":-1}}', '{"capabilities":{"max_msg_fds":1025}}',
    '{"capabilities":{"max_msg_fds":1.5}}', '{"capabilities":{"max_data_xfer_size":"1"}}', '{"capabilities":{"pgsizes":100}}',
    '{"capabilities":{"write_multiple":1}}', '{"capabilities":{"migration":[]}}', '{"capabilities":{"migration":{"pgsize":10}}}',
    '{"capabilities":{"twin_socket":{"supported":"yes"}}}',
  ])('rejects %s with EINVAL', (json) => {
    expect(() => P.parseCapabilities(json)).toThrow(expect.objectContaining({ errno: P.Errno.EINVAL }));
  });
  it('formats within a budget by dropping optional keys', () => {
    const caps = { maxMsgFds: 16, maxDataXferSize: 1 << 20, pgsizes: 4096, maxDmaMaps: 65535, writeMultiple: true };
    const full = P.formatCapabilities(caps);
    expect(JSON.parse(full)).toEqual({ capabilities: { max_msg_fds: 16, max_data_xfer_size: 1048576, pgsizes: 4096, max_dma_maps: 65535, write_multiple: true } });
    const small = P.formatCapabilities(caps, 70);
    expect(small.length).toBeLessThanOrEqual(70);
    expect(JSON.parse(small).capabilities.max_msg_fds).toBe(16);
    expect(P.formatCapabilities(caps, 5)).toBe('{}');
  });
});

describe('VERSION', () => {
  it('round-trips and validates the NUL', () => {
    const m = P.encodeVersionRequest(1, { major: 0, minor: 0, json: '{"capabilities":{"max_msg_fds":8}}' });
    const d = P.decodeVersion(m);
    expect(d).toMatchObject({ major: 0, minor: 0, capabilities: { maxMsgFds: 8 } });
    expect(m[m.length - 1]).toBe(0);
    expect(P.encodeVersionRequest(1, { major: 0, minor: 0, json: '{}' }).byteLength).toBe(23);
    const noNul = m.slice(0, m.length - 1);
    expect(() => P.decodeVersion(noNul)).toThrow(P.ProtocolError);
    expect(() => P.decodeVersion(P.encodeHeader({ id: 1, command: 1, size: 18, flags: 0, error: 0 }).slice(0, 18))).toThrow(P.ProtocolError);
    expect(P.decodeVersion(P.encodeVersionReply(1, { major: 0, minor: 0, json: '' })).json).toBe('');
  });
});

describe('messages round-trip', () => {
  it('DMA_MAP / DMA_UNMAP', () => {
    const map = { flags: 3, offset: 0x1000n, addr: 0xfee00000n, size: 0x200000n };
    expect(P.decodeDmaMapRequest(P.encodeDmaMapRequest(1, map))).toEqual({ argsz: 32, ...map });
    const un = { flags: 0, addr: 5n << 32n, size: 4096n };
    expect(P.decodeDmaUnmapRequest(P.encodeDmaUnmapRequest(2, un))).toEqual({ argsz: 24, ...un });
    expect(P.decodeDmaUnmapReply(P.encodeDmaUnmapReply(2, { argsz: 24, ...un }))).toEqual({ argsz: 24, ...un });
    expect(P.encodeDmaMapReply(1).byteLength).toBe(16);
  });
  it('GET_INFO / IRQ_INFO / SET_IRQS', () => {
    expect(P.decodeDeviceInfo(P.encodeDeviceInfoReply(1, { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 }))).toEqual({ argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 });
    expect(P.decodeDeviceInfo(P.encodeDeviceInfoRequest(1)).argsz).toBe(16);
    expect(P.decodeIrqInfo(P.encodeIrqInfoReply(1, { argsz: 16, flags: 1, index: 2, count: 4 }))).toEqual({ argsz: 16, flags: 1, index: 2, count: 4 });
    const s = P.decodeSetIrqsRequest(P.encodeSetIrqsRequest(1, { flags: 0x22, index: 2, start: 1, count: 2, data: new Uint8Array([1, 0]) }));
    expect(s).toMatchObject({ argsz: 22, flags: 0x22, index: 2, start: 1, count: 2 });
    expect([...s.data]).toEqual([1, 0]);
  });
  it('REGION_INFO with caps, truncated to argsz', () => {
    const caps: P.RegionCapability[] = [
      { id: RegionCap.SPARSE_MMAP, areas: [{ offset: 0n, size: 4096n }, { offset: 8192n, size: 4096n }] },
      { id: RegionCap.TYPE, type: 3, subtype: 1 },
      { id: RegionCap.MSIX_MAPPABLE },
    ];
    const info = { flags: RegionFlag.READ | RegionFlag.MMAP, index: 1, size: 16384n, offset: 0n };
    const full = P.regionInfoFullSize(caps);
    expect(full).toBe(32 + 48 + 16 + 8);
    const short = P.encodeRegionInfoReply(5, info, caps, 32);
    expect(short.complete).toBe(false);
    expect(short.bytes.byteLength).toBe(16 + 32);
    const ds = P.decodeRegionInfoReply(short.bytes);
    expect(ds).toMatchObject({ argsz: full, flags: info.flags, capOffset: 0, caps: [] });
    const mid = P.encodeRegionInfoReply(5, info, caps, 60);
    expect(mid.bytes.byteLength).toBe(16 + 60);
    expect(mid.complete).toBe(false);
    const whole = P.encodeRegionInfoReply(5, info, caps, 4096);
    expect(whole.complete).toBe(true);
    const d = P.decodeRegionInfoReply(whole.bytes);
    expect(d.flags & RegionFlag.CAPS).toBeTruthy();
    expect(d.capOffset).toBe(32);
    expect(d.caps).toEqual(caps);
    expect(P.decodeRegionInfoRequest(P.encodeRegionInfoRequest(1, 7, 99))).toMatchObject({ index: 7, argsz: 99 });
  });
  it('REGION_INFO decoder refuses chains out of bounds or looping', () => {
    const whole = P.encodeRegionInfoReply(5, { flags: 1, index: 0, size: 1n, offset: 0n }, [{ id: RegionCap.TYPE, type: 1, subtype: 2 }, { id: RegionCap.MSIX_MAPPABLE }], 4096).bytes;
    const loop = whole.slice();
    new DataView(loop.buffer).setUint32(16 + 32 + 4, 32, true); // first cap's next -> itself
    expect(() => P.decodeRegionInfoReply(loop)).toThrow(P.ProtocolError);
    const out = whole.slice();
    new DataView(out.buffer).setUint32(16 + 32 + 4, 1 << 30, true);
    expect(() => P.decodeRegionInfoReply(out)).toThrow(P.ProtocolError);
  });
  it('REGION_IO_FDS', () => {
    expect(P.decodeRegionIoFdsRequest(P.encodeRegionIoFdsRequest(1, 0, 100))).toEqual({ argsz: 100, flags: 0, index: 0, count: 0 });
    const sub = { offset: 8n, size: 4n, fdIndex: 0, type: 0, flags: 0, data: 7n };
    const r = P.encodeRegionIoFdsReply(1, 0, [sub], 100);
    expect(P.decodeRegionIoFdsReply(r.bytes).subRegions).toEqual([sub]);
    expect(P.decodeRegionIoFdsReply(P.encodeRegionIoFdsReply(1, 0, [sub], 16).bytes)).toMatchObject({ argsz: 56, count: 1, subRegions: [] });
  });
  it('REGION_READ / WRITE / WRITE_MULTI', () => {
    const a = { offset: 0x10n, region: 7, count: 4 };
    expect(P.decodeRegionReadRequest(P.encodeRegionReadRequest(1, a))).toEqual(a);
    const rr = P.decodeRegionReadReply(P.encodeRegionReadReply(1, 0x10n, 7, new Uint8Array([1, 2, 3, 4])));
    expect([...rr.data]).toEqual([1, 2, 3, 4]);
    const w = P.decodeRegionWriteRequest(P.encodeRegionWriteRequest(1, 8n, 0, new Uint8Array([9, 9])));
    expect(w).toMatchObject({ offset: 8n, region: 0, count: 2 });
    expect(P.decodeRegionWriteReply(P.encodeRegionWriteReply(1, a))).toEqual(a);
    const multi = P.encodeRegionWriteMultiRequest(3, [{ offset: 0n, region: 0, count: 4, data: new Uint8Array([1, 2, 3, 4]) }, { offset: 8n, region: 2, count: 8, data: new Uint8Array(8).fill(5) }]);
    expect(P.decodeHeader(multi).flags & HeaderFlag.NO_REPLY).toBeTruthy();
    const d = P.decodeRegionWriteMultiRequest(multi);
    expect(d.map((x) => [x.offset, x.region, x.count, [...x.data]])).toEqual([[0n, 0, 4, [1, 2, 3, 4]], [8n, 2, 8, [5, 5, 5, 5, 5, 5, 5, 5]]]);
    expect(P.decodeRegionWriteMultiReply(P.encodeRegionWriteMultiReply(3, 2))).toBe(2);
    const bad = multi.slice(0, multi.length - 1);
    expect(() => P.decodeRegionWriteMultiRequest(bad)).toThrow(P.ProtocolError);
  });
  it('DMA_READ / DMA_WRITE use the spec layout (data at byte 32)', () => {
    const req = P.encodeDmaReadRequest(1, 0x2000n, 64);
    expect(req.byteLength).toBe(32);
    expect(P.decodeDmaReadRequest(req)).toEqual({ addr: 0x2000n, count: 64n });
    const data = new Uint8Array(64).map((_, i) => i);
    const rep = P.encodeDmaReadReply(1, 0x2000n, data);
    expect(rep[32]).toBe(0);
    expect(rep[33]).toBe(1);
    expect([...P.decodeDmaReadReply(rep).data]).toEqual([...data]);
    const w = P.encodeDmaWriteRequest(2, 0x3000n, data);
    expect(P.decodeDmaWriteRequest(w)).toMatchObject({ addr: 0x3000n, count: 64n });
    expect(P.encodeDmaWriteReply(2, 0x3000n, 64).byteLength).toBe(32);
    expect(P.decodeDmaWriteReply(P.encodeDmaWriteReply(2, 0x3000n, 64))).toEqual({ addr: 0x3000n, count: 64n });
    expect(P.decodeDmaWriteReply(P.encodeEmptyReply(2, VfioUserCommand.DMA_WRITE))).toEqual({});
  });
  it('DEVICE_FEATURE / MIG_DATA / DEVICE_RESET', () => {
    const f = P.decodeDeviceFeature(P.encodeDeviceFeatureRequest(1, { flags: P.DeviceFeatureFlag.GET | 1, data: new Uint8Array(8) }));
    expect(f).toMatchObject({ argsz: 16, flags: 0x10001 });
    expect(P.decodeMigDataReadRequest(P.encodeMigDataReadRequest(1, 100))).toEqual({ argsz: 108, size: 100 });
    expect(P.decodeMigDataReadReply(P.encodeMigDataReadReply(1, new Uint8Array(3))).size).toBe(3);
    expect(P.decodeMigDataWriteRequest(P.encodeMigDataWriteRequest(1, new Uint8Array(5))).size).toBe(5);
    expect(P.encodeDeviceResetRequest(1).byteLength).toBe(16);
    expect(P.decodeHeader(P.encodeDeviceResetReply(1)).flags).toBe(HeaderFlag.TYPE_REPLY);
  });
});

describe('decoders are total', () => {
  const decoders = [
    P.decodeVersion, P.decodeDmaMapRequest, P.decodeDmaUnmapRequest, P.decodeDeviceInfo, P.decodeRegionInfoRequest,
    P.decodeRegionInfoReply, P.decodeRegionIoFdsRequest, P.decodeRegionIoFdsReply, P.decodeIrqInfo, P.decodeSetIrqsRequest,
    P.decodeRegionReadRequest, P.decodeRegionReadReply, P.decodeRegionWriteRequest, P.decodeRegionWriteMultiRequest,
    P.decodeDmaReadRequest, P.decodeDmaReadReply, P.decodeDmaWriteRequest, P.decodeDmaWriteReply, P.decodeDeviceFeature,
    P.decodeMigDataReadRequest, P.decodeMigDataReadReply, P.decodeMigDataWriteRequest, P.decodeHeader,
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
    expect([...bytes.subarray(2, 18)]).toEqual([0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 5, 0, 0, 0]);
    expect(S.read(view, 2)).toEqual({ a: 0xffffffff, b: 0xfffffffffffffffen, c: 5 });
    expect(() => S.decode(new Uint8Array(16 + 15), 'S')).toThrow(P.ProtocolError);
  });

  it('messages put every field at its spec offset', () => {
    const u32 = (m: Uint8Array, o: number) => new DataView(m.buffer, m.byteOffset).getUint32(o, true);
    const u64 = (m: Uint8Array, o: number) => new DataView(m.buffer, m.byteOffset).getBigUint64(o, true);
    const info = P.encodeDeviceInfoReply(1, { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 });
    expect([16, 20, 24, 28].map((o) => u32(info, o))).toEqual([16, 3, 9, 5]);
    const irq = P.encodeIrqInfoReply(1, { argsz: 16, flags: 1, index: 2, count: 4 });
    expect([16, 20, 24, 28].map((o) => u32(irq, o))).toEqual([16, 1, 2, 4]);
    const set = P.encodeSetIrqsRequest(1, { flags: 0x22, index: 2, start: 1, count: 2, data: new Uint8Array([1, 0]) });
    expect([16, 20, 24, 28, 32].map((o) => u32(set, o))).toEqual([22, 0x22, 2, 1, 2]);
    expect([...set.subarray(36)]).toEqual([1, 0]);
    const map = P.encodeDmaMapRequest(1, { flags: 3, offset: 0x1000n, addr: 0xfee00000n, size: 0x200000n });
    expect([u32(map, 16), u32(map, 20), u64(map, 24), u64(map, 32), u64(map, 40)]).toEqual([32, 3, 0x1000n, 0xfee00000n, 0x200000n]);
    const unmap = P.encodeDmaUnmapReply(1, { argsz: 48, flags: 2, addr: 0x2000n, size: 0x1000n, bitmap: { pgsize: 4096n, size: 8n, data: new Uint8Array(8).fill(0xaa) } });
    expect([u32(unmap, 16), u32(unmap, 20), u64(unmap, 24), u64(unmap, 32), u64(unmap, 40), u64(unmap, 48)]).toEqual([48, 2, 0x2000n, 0x1000n, 4096n, 8n]);
    expect(unmap[56]).toBe(0xaa);
    const region = P.encodeRegionInfoReply(1, { flags: RegionFlag.READ, index: 2, size: 0x4000n, offset: 0x10000n }, [], 32).bytes;
    expect([u32(region, 16), u32(region, 20), u32(region, 24), u32(region, 28), u64(region, 32), u64(region, 40)]).toEqual([32, RegionFlag.READ, 2, 0, 0x4000n, 0x10000n]);
    const fds = P.encodeRegionIoFdsRequest(1, 3, 100);
    expect([16, 20, 24, 28].map((o) => u32(fds, o))).toEqual([100, 0, 3, 0]);
  });
});
