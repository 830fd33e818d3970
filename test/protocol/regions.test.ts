/**
 * DEVICE_GET_REGION_INFO (5, with its capability chain) and
 * DEVICE_GET_REGION_IO_FDS (6): the codec, the happy path on both device
 * models, and libvfio-user's EINVAL for bad input (the connection lives).
 */
import { describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import * as P from '../../protocol/index.js';
import { VfioUserCommand, Errno, PciRegion, RegionCap, RegionFlag } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import { DEVICE_KINDS, expectAlive, expectErrorReply, fields, rawRequest } from '../helpers/harness.js';
import { BAR0_SIZE, BAR2_SIZE, CONFIG_SIZE } from '../helpers/test-device.js';
import type { VfioUserClient } from '../../client/index.js';

const u32s = (...v: number[]) => fields(...v.map((x) => ['u32', x] as ['u32', number]));

describe('codec', () => {
  it('REGION_INFO with caps, truncated to argsz', () => {
    const caps: P.RegionCapability[] = [
      {
        id: RegionCap.SPARSE_MMAP,
        areas: [
          { offset: 0n, size: 4096n },
          { offset: 8192n, size: 4096n },
        ],
      },
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
    const whole = P.encodeRegionInfoReply(
      5,
      { flags: 1, index: 0, size: 1n, offset: 0n },
      [{ id: RegionCap.TYPE, type: 1, subtype: 2 }, { id: RegionCap.MSIX_MAPPABLE }],
      4096,
    ).bytes;
    const loop = whole.slice();
    new DataView(loop.buffer).setUint32(16 + 32 + 4, 32, true); // first cap's next -> itself
    expect(() => P.decodeRegionInfoReply(loop)).toThrow(P.ProtocolError);
    const out = whole.slice();
    new DataView(out.buffer).setUint32(16 + 32 + 4, 1 << 30, true);
    expect(() => P.decodeRegionInfoReply(out)).toThrow(P.ProtocolError);
  });

  it('REGION_IO_FDS', () => {
    expect(P.decodeRegionIoFdsRequest(P.encodeRegionIoFdsRequest(1, 0, 100))).toEqual({
      argsz: 100,
      flags: 0,
      index: 0,
      count: 0,
    });
    const sub = { offset: 8n, size: 4n, fdIndex: 0, type: 0, flags: 0, data: 7n };
    const r = P.encodeRegionIoFdsReply(1, 0, [sub], 100);
    expect(P.decodeRegionIoFdsReply(r.bytes).subRegions).toEqual([sub]);
    expect(P.decodeRegionIoFdsReply(P.encodeRegionIoFdsReply(1, 0, [sub], 16).bytes)).toMatchObject({
      argsz: 56,
      count: 1,
      subRegions: [],
    });
  });

  it('every field at its spec offset', () => {
    const u32 = (m: Uint8Array, o: number) => new DataView(m.buffer, m.byteOffset).getUint32(o, true);
    const u64 = (m: Uint8Array, o: number) => new DataView(m.buffer, m.byteOffset).getBigUint64(o, true);
    const region = P.encodeRegionInfoReply(
      1,
      { flags: RegionFlag.READ, index: 2, size: 0x4000n, offset: 0x10000n },
      [],
      32,
    ).bytes;
    expect([
      u32(region, 16),
      u32(region, 20),
      u32(region, 24),
      u32(region, 28),
      u64(region, 32),
      u64(region, 40),
    ]).toEqual([32, RegionFlag.READ, 2, 0, 0x4000n, 0x10000n]);
    const fds = P.encodeRegionIoFdsRequest(1, 3, 100);
    expect([16, 20, 24, 28].map((o) => u32(fds, o))).toEqual([100, 0, 3, 0]);
  });
});

describe.each(DEVICE_KINDS)('happy path (%s)', (_kind, make) => {
  let client: VfioUserClient;
  connectedEachTest((connected) => {
    client = connected;
  }, make);

  it('DEVICE_GET_REGION_INFO: plain regions and the absent ones', async () => {
    const cfg = await client.getRegionInfo(PciRegion.CONFIG);
    expect(cfg).toMatchObject({ index: PciRegion.CONFIG, size: BigInt(CONFIG_SIZE), caps: [] });
    expect(cfg.flags & (RegionFlag.READ | RegionFlag.WRITE)).toBe(RegionFlag.READ | RegionFlag.WRITE);
    expect(cfg.fd).toBeUndefined();
    const bar0 = await client.getRegionInfo(PciRegion.BAR0);
    expect(bar0.size).toBe(BigInt(BAR0_SIZE));
    const bar1 = await client.getRegionInfo(PciRegion.BAR1);
    expect(bar1.size).toBe(0n);
  });

  it('DEVICE_GET_REGION_INFO: an mmappable region comes with its sparse cap and fd, only when argsz fits', async () => {
    const short = await client.getRegionInfo(PciRegion.BAR2, 32);
    expect(short.argsz).toBeGreaterThan(32);
    expect(short.flags & RegionFlag.CAPS).toBe(0);
    expect(short.caps).toEqual([]);
    expect(short.fd).toBeUndefined();

    const full = await client.getRegionInfo(PciRegion.BAR2);
    try {
      expect(full.flags & RegionFlag.MMAP).toBe(RegionFlag.MMAP);
      expect(full.flags & RegionFlag.CAPS).toBe(RegionFlag.CAPS);
      expect(full.caps).toEqual([{ id: RegionCap.SPARSE_MMAP, areas: [{ offset: 0n, size: BigInt(BAR2_SIZE) }] }]);
      expect(full.fd).toBeTypeOf('number');
      // The fd really is the region: write through a mapping, read by message.
      const map = native.mmapFd(full.fd!, Number(full.offset), BAR2_SIZE, native.PROT_READ | native.PROT_WRITE);
      new Uint8Array(map.buffers[0]!).set([1, 2, 3, 4], 0x100);
      expect([...(await client.regionRead(PciRegion.BAR2, 0x100, 4))]).toEqual([1, 2, 3, 4]);
      await client.regionWrite(PciRegion.BAR2, 0x200, new Uint8Array([9, 8, 7]));
      expect([...new Uint8Array(map.buffers[0]!, 0x200, 3)]).toEqual([9, 8, 7]);
      map.unmap();
    } finally {
      if (full.fd !== undefined) native.closeFd(full.fd);
    }
  });

  it('DEVICE_GET_REGION_IO_FDS: answered (no ioeventfds) or refused with EINVAL, never a hang', async () => {
    try {
      const r = await client.getRegionIoFds(PciRegion.BAR0);
      for (const fd of r.fds) native.closeFd(fd);
      expect(r.index).toBe(PciRegion.BAR0);
    } catch (err) {
      expect((err as { errno: number }).errno).toBe(Errno.EINVAL);
    }
  });
});

describe('GET_REGION_INFO / GET_REGION_IO_FDS: bad input', () => {
  let c: VfioUserClient;
  connectedEachTest((client) => {
    c = client;
  });

  const cases: Array<[string, number, Uint8Array]> = [
    ['GET_REGION_INFO payload 16 bytes', VfioUserCommand.DEVICE_GET_REGION_INFO, u32s(32, 0, 7, 0)],
    ['GET_REGION_INFO argsz 31', VfioUserCommand.DEVICE_GET_REGION_INFO, u32s(31, 0, 7, 0, 0, 0, 0, 0)],
    ['GET_REGION_INFO index 9 (= num_regions)', VfioUserCommand.DEVICE_GET_REGION_INFO, u32s(32, 0, 9, 0, 0, 0, 0, 0)],
    [
      'GET_REGION_INFO index 0xffffffff',
      VfioUserCommand.DEVICE_GET_REGION_INFO,
      u32s(32, 0, 0xffffffff, 0, 0, 0, 0, 0),
    ],
    ['GET_REGION_IO_FDS flags != 0', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(4096, 1, 0, 0)],
    ['GET_REGION_IO_FDS count != 0', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(4096, 0, 0, 1)],
    ['GET_REGION_IO_FDS bad index', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(4096, 0, 99, 0)],
    ['GET_REGION_IO_FDS argsz < 16', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(8, 0, 0, 0)],
    ['GET_REGION_IO_FDS argsz > 1 MiB', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(0x100001, 0, 0, 0)],
    [
      'GET_REGION_IO_FDS region with no flags (BAR1)',
      VfioUserCommand.DEVICE_GET_REGION_IO_FDS,
      u32s(4096, 0, PciRegion.BAR1, 0),
    ],
    ['GET_REGION_IO_FDS payload 12 bytes', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(4096, 0, 0)],
  ];
  for (const [what, cmd, payload] of cases) {
    it(`${what} -> EINVAL, alive`, async () => {
      expectErrorReply(await rawRequest(c, { command: cmd }, payload), Errno.EINVAL);
      await expectAlive(c);
    });
  }

  it('GET_REGION_INFO reply never exceeds the request argsz (caps that do not fit are dropped, with no fd)', async () => {
    for (const argsz of [32, 33, 40, 47]) {
      const reply = await rawRequest(
        c,
        { command: VfioUserCommand.DEVICE_GET_REGION_INFO },
        u32s(argsz, 0, PciRegion.BAR2, 0, 0, 0, 0, 0),
      );
      expect(reply.message.byteLength - 16).toBeLessThanOrEqual(Math.max(32, argsz));
      expect(reply.fds).toEqual([]);
    }
  });
});
