/**
 * REGION_READ (9), REGION_WRITE (10) and REGION_WRITE_MULTI (15): the codec,
 * the happy path on both device models, libvfio-user's validation
 * (is_valid_region_access: EINVAL, alive), REGION_WRITE's hot path (the posted
 * NVMe doorbell: register-sized data is copied, larger data is a view of the
 * message; NO_REPLY writes land without any reply), and REGION_WRITE_MULTI:
 * applied in order (QEMU sends it with NO_REPLY), malformed batches EINVAL;
 * write_multiple is advertised only when the server is asked to
 * (serve({ writeMultiple: true })), but command 15 is served either way: QEMU
 * with x-send-queued=on sends it without the capability.
 */
import { describe, expect, it } from 'vitest';
import * as P from '../../protocol/index.js';
import { VfioUserCommand, Errno, HeaderFlag, PciRegion } from '../../protocol/constants.js';
import { encodeRegionWriteMultiRequest } from '../../protocol/region-access.js';
import { connectedEachTest, deviceEachTest } from '../helpers/per-test.js';
import {
  DEVICE_KINDS,
  expectAlive,
  expectErrno,
  expectErrorReply,
  fields,
  rawMessage,
  rawRequest,
  type RunningDevice,
} from '../helpers/harness.js';
import { BAR0_SIZE, CONFIG_SIZE, Reg, TEST_DEVICE, TEST_VENDOR } from '../helpers/test-device.js';
import type { VfioUserClient } from '../../client/index.js';

describe('codec', () => {
  it('REGION_READ / WRITE / WRITE_MULTI', () => {
    const a = { offset: 0x10n, region: 7, count: 4 };
    expect(P.decodeRegionReadRequest(P.encodeRegionReadRequest(1, a))).toEqual(a);
    const rr = P.decodeRegionReadReply(P.encodeRegionReadReply(1, 0x10n, 7, new Uint8Array([1, 2, 3, 4])));
    expect([...rr.data]).toEqual([1, 2, 3, 4]);
    const w = P.decodeRegionWriteRequest(P.encodeRegionWriteRequest(1, 8n, 0, new Uint8Array([9, 9])));
    expect(w).toMatchObject({ offset: 8n, region: 0, count: 2 });
    expect(P.decodeRegionWriteReply(P.encodeRegionWriteReply(1, a))).toEqual(a);
    const multi = P.encodeRegionWriteMultiRequest(3, [
      { offset: 0n, region: 0, count: 4, data: new Uint8Array([1, 2, 3, 4]) },
      { offset: 8n, region: 2, count: 8, data: new Uint8Array(8).fill(5) },
    ]);
    expect(P.decodeHeader(multi).flags & HeaderFlag.NO_REPLY).toBeTruthy();
    const d = P.decodeRegionWriteMultiRequest(multi);
    expect(d.map((x) => [x.offset, x.region, x.count, [...x.data]])).toEqual([
      [0n, 0, 4, [1, 2, 3, 4]],
      [8n, 2, 8, [5, 5, 5, 5, 5, 5, 5, 5]],
    ]);
    expect(P.decodeRegionWriteMultiReply(P.encodeRegionWriteMultiReply(3, 2))).toBe(2);
    const bad = multi.slice(0, multi.length - 1);
    expect(() => P.decodeRegionWriteMultiRequest(bad)).toThrow(P.ProtocolError);
  });
});

describe.each(DEVICE_KINDS)('happy path (%s)', (_kind, make) => {
  let client: VfioUserClient;
  connectedEachTest((connected) => {
    client = connected;
  }, make);

  it('REGION_READ / REGION_WRITE on config space and a BAR, all access sizes', async () => {
    expect(await client.cfg16(0)).toBe(TEST_VENDOR);
    expect(await client.cfg16(2)).toBe(TEST_DEVICE);
    expect(await client.cfg32(0)).toBe(((TEST_DEVICE << 16) | TEST_VENDOR) >>> 0);
    const all = await client.regionRead(PciRegion.CONFIG, 0, CONFIG_SIZE);
    expect(all.byteLength).toBe(CONFIG_SIZE);
    for (const size of [1, 2, 4, 8]) {
      const data = new Uint8Array(size).map((_, i) => 0x10 * size + i);
      await client.regionWrite(PciRegion.BAR0, 0x100, data);
      expect([...(await client.regionRead(PciRegion.BAR0, 0x100, size))]).toEqual([...data]);
    }
    // count 0: an empty, successful read.
    expect((await client.regionRead(PciRegion.BAR0, 0, 0)).byteLength).toBe(0);
  });

  it('REGION_WRITE posted (NO_REPLY): applied in order, never answered', async () => {
    await client.regionWrite(PciRegion.BAR0, Reg.SCRATCH0, u32(0xdeadbeef), { posted: true });
    expect(await client.regionRead(PciRegion.BAR0, Reg.SCRATCH0, 4)).toEqual(u32(0xdeadbeef));
    expect(client.strays).toEqual([]);
  });
});

const access = (offset: bigint | number, region: number, count: number, data = new Uint8Array(0)) => {
  const head = fields(['u64', offset], ['u32', region], ['u32', count]);
  const p = new Uint8Array(head.byteLength + data.byteLength);
  p.set(head);
  p.set(data, head.byteLength);
  return p;
};

describe('REGION_READ / REGION_WRITE: bad input', () => {
  let c: VfioUserClient;
  connectedEachTest((client) => {
    c = client;
  });

  const reads: Array<[string, Uint8Array]> = [
    ['payload shorter than 16', fields(['u64', 0], ['u32', 7])],
    ['region = num_regions', access(0, 9, 4)],
    ['region 0xffffffff', access(0, 0xffffffff, 4)],
    ['offset + count past the end', access(CONFIG_SIZE - 2, PciRegion.CONFIG, 4)],
    ['offset past the end', access(CONFIG_SIZE, PciRegion.CONFIG, 1)],
    ['offset + count overflowing u64', access(0xfffffffffffffffcn, PciRegion.CONFIG, 8)],
    ['count > max_data_xfer_size', access(0, PciRegion.BAR0, (1 << 20) + 1)],
    ['count 0xffffffff', access(0, PciRegion.BAR0, 0xffffffff)],
    ['a region of size 0 (BAR1)', access(0, PciRegion.BAR1, 4)],
  ];
  for (const [what, payload] of reads) {
    it(`read: ${what} -> EINVAL, alive`, async () => {
      expectErrorReply(await rawRequest(c, { command: VfioUserCommand.REGION_READ }, payload), Errno.EINVAL);
      await expectAlive(c);
    });
  }

  const writes: Array<[string, Uint8Array]> = [
    ['data shorter than count', access(0, PciRegion.BAR0, 8, new Uint8Array(4))],
    ['data longer than count', access(0, PciRegion.BAR0, 4, new Uint8Array(8))],
    ['past the end', access(BAR0_SIZE - 4, PciRegion.BAR0, 8, new Uint8Array(8))],
    ['bad region', access(0, 12, 4, new Uint8Array(4))],
    ['region with no data (VGA)', access(0, PciRegion.VGA, 4, new Uint8Array(4))],
  ];
  for (const [what, payload] of writes) {
    it(`write: ${what} -> EINVAL, alive`, async () => {
      expectErrorReply(await rawRequest(c, { command: VfioUserCommand.REGION_WRITE }, payload), Errno.EINVAL);
      await expectAlive(c);
    });
  }

  it('the typed client surfaces the errno', async () => {
    await expectErrno(c.regionRead(PciRegion.CONFIG, CONFIG_SIZE, 4), Errno.EINVAL);
    await expectErrno(c.regionWrite(PciRegion.BAR1, 0, new Uint8Array(4)), Errno.EINVAL);
  });

  it('read reply: 16-byte echo plus exactly count bytes; write reply: the echo', async () => {
    const r = await rawRequest(c, { command: VfioUserCommand.REGION_READ }, access(4, PciRegion.CONFIG, 12));
    expect(r.message.byteLength).toBe(16 + 16 + 12);
    const w = await rawRequest(
      c,
      { command: VfioUserCommand.REGION_WRITE },
      access(0, PciRegion.BAR0, 4, new Uint8Array(4)),
    );
    expect(w.message.byteLength).toBe(32);
    expect(new DataView(w.message.buffer, w.message.byteOffset).getUint32(28, true)).toBe(4);
  });
});

function writePayload(offset: number, region: number, data: Uint8Array, count = data.byteLength): Uint8Array {
  const head = fields(['u64', offset], ['u32', region], ['u32', count]);
  const p = new Uint8Array(head.byteLength + data.byteLength);
  p.set(head);
  p.set(data, head.byteLength);
  return p;
}

function bytes(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (seed + i * 7) & 0xff);
}

describe('REGION_WRITE fast path', () => {
  let c: VfioUserClient;
  connectedEachTest((client) => {
    c = client;
  });

  it('posted (NO_REPLY) writes of 1, 2, 4, 8 and 64 bytes land in order, with no reply', async () => {
    const writes: Array<[number, Uint8Array]> = [
      [0x100, bytes(1, 1)],
      [0x102, bytes(2, 2)],
      [0x104, bytes(4, 3)],
      [0x108, bytes(8, 4)],
      [0x140, bytes(64, 5)],
    ];
    for (const [offset, data] of writes) {
      await c.sendRaw(
        rawMessage(
          { id: c.freshId(), command: VfioUserCommand.REGION_WRITE, flags: HeaderFlag.NO_REPLY },
          writePayload(offset, PciRegion.BAR0, data),
        ),
        [],
        { expectId: null },
      );
    }
    // A request after the posted ones is answered after they ran (in order).
    for (const [offset, data] of writes) {
      expect(await c.regionRead(PciRegion.BAR0, offset, data.byteLength)).toEqual(data);
    }
  });

  it('a replied write is echoed (offset, region, count) and lands', async () => {
    const data = bytes(8, 9);
    const r = await rawRequest(c, { command: VfioUserCommand.REGION_WRITE }, writePayload(0x180, PciRegion.BAR0, data));
    expect(r.message.byteLength).toBe(32);
    const v = new DataView(r.message.buffer, r.message.byteOffset, r.message.byteLength);
    expect(v.getBigUint64(16, true)).toBe(0x180n);
    expect(v.getUint32(24, true)).toBe(PciRegion.BAR0);
    expect(v.getUint32(28, true)).toBe(8);
    expect(await c.regionRead(PciRegion.BAR0, 0x180, 8)).toEqual(data);
  });

  it('a payload shorter than 16 bytes is EINVAL, alive', async () => {
    expectErrorReply(
      await rawRequest(c, { command: VfioUserCommand.REGION_WRITE }, fields(['u64', 0], ['u32', 0])),
      Errno.EINVAL,
    );
    await expectAlive(c);
  });

  it('count larger or smaller than the data is EINVAL, alive', async () => {
    expectErrorReply(
      await rawRequest(
        c,
        { command: VfioUserCommand.REGION_WRITE },
        writePayload(0x100, PciRegion.BAR0, bytes(4, 1), 8),
      ),
      Errno.EINVAL,
    );
    expectErrorReply(
      await rawRequest(
        c,
        { command: VfioUserCommand.REGION_WRITE },
        writePayload(0x100, PciRegion.BAR0, bytes(8, 1), 4),
      ),
      Errno.EINVAL,
    );
    await expectAlive(c);
  });

  it('a bad posted write is dropped silently and changes nothing', async () => {
    const before = await c.regionRead(PciRegion.BAR0, 0x1c0, 4);
    await c.sendRaw(
      rawMessage(
        { id: c.freshId(), command: VfioUserCommand.REGION_WRITE, flags: HeaderFlag.NO_REPLY },
        writePayload(0x1c0, PciRegion.BAR0, bytes(4, 3), 2),
      ),
      [],
      { expectId: null },
    );
    expect(await c.regionRead(PciRegion.BAR0, 0x1c0, 4)).toEqual(before);
    await expectAlive(c);
  });
});

const u32 = (v: number) => fields(['u32', v]);
const entry = (offset: number, count: number, data: Uint8Array) => ({
  offset: BigInt(offset),
  region: PciRegion.BAR0,
  count,
  data,
});

describe('REGION_WRITE_MULTI', () => {
  let run: RunningDevice;
  deviceEachTest(
    (started) => {
      run = started;
    },
    undefined,
    { writeMultiple: true },
  );

  it('negotiated: a NO_REPLY batch is applied in order, nothing comes back', async () => {
    const c = await run.connect();
    expect(c.server!.capabilities.writeMultiple).toBe(true);
    const batch = [
      entry(Reg.SCRATCH0, 4, u32(1)),
      entry(Reg.SCRATCH1, 4, u32(2)),
      entry(Reg.SCRATCH0, 4, u32(3)),
      entry(0x100, 2, new Uint8Array([0xaa, 0xbb])),
    ];
    await c.sendRaw(encodeRegionWriteMultiRequest(c.freshId(), batch, true), [], { expectId: null });
    expect(await c.regionRead(PciRegion.BAR0, Reg.SCRATCH0, 8)).toEqual(new Uint8Array([3, 0, 0, 0, 2, 0, 0, 0]));
    expect(await c.regionRead(PciRegion.BAR0, 0x100, 2)).toEqual(new Uint8Array([0xaa, 0xbb]));
    expect(c.strays).toEqual([]);
  });

  it('negotiated, with a reply requested: the reply carries wr_cnt', async () => {
    const c = await run.connect();
    const reply = (await c.request(
      VfioUserCommand.REGION_WRITE_MULTI,
      encodeRegionWriteMultiRequest(0, [entry(0, 4, u32(9))], false).subarray(16),
    ))!;
    expect(reply.message.byteLength).toBe(24);
    expect(new DataView(reply.message.buffer, reply.message.byteOffset).getBigUint64(16, true)).toBe(1n);
  });

  const bad: Array<[string, Uint8Array]> = [
    ['payload < 8', new Uint8Array(4)],
    ['wr_cnt 0', fields(['u64', 0])],
    ['wr_cnt 201', fields(['u64', 201])],
    ['fewer entries than wr_cnt', fields(['u64', 2], ['u64', 0], ['u32', 0], ['u32', 4], ['u64', 0])],
    ['an entry with count 0', fields(['u64', 1], ['u64', 0], ['u32', 0], ['u32', 0], ['u64', 0])],
    ['an entry with count 9', fields(['u64', 1], ['u64', 0], ['u32', 0], ['u32', 9], ['u64', 0])],
    ['an entry past the region end', fields(['u64', 1], ['u64', 0xffe], ['u32', 0], ['u32', 4], ['u64', 0])],
    ['an entry in a bad region', fields(['u64', 1], ['u64', 0], ['u32', 42], ['u32', 4], ['u64', 0])],
  ];
  for (const [what, payload] of bad) {
    it(`${what} -> EINVAL, alive`, async () => {
      const c = await run.connect();
      expectErrorReply(await rawRequest(c, { command: VfioUserCommand.REGION_WRITE_MULTI }, payload), Errno.EINVAL);
      await expectAlive(c);
    });
  }
});

describe('REGION_WRITE_MULTI without the capability (the default)', () => {
  let plain: RunningDevice;
  deviceEachTest((started) => {
    plain = started;
  });

  it('is not advertised, and a batch is still applied (QEMU x-send-queued=on sends it anyway)', async () => {
    const c = await plain.connect();
    expect(c.server!.capabilities.writeMultiple).toBe(false);
    const payload = encodeRegionWriteMultiRequest(0, [entry(Reg.SCRATCH0, 4, u32(5))], false).subarray(16);
    await c.sendRaw(
      rawMessage({ id: c.freshId(), command: VfioUserCommand.REGION_WRITE_MULTI, flags: HeaderFlag.NO_REPLY }, payload),
      [],
      { expectId: null },
    );
    expect(await c.regionRead(PciRegion.BAR0, Reg.SCRATCH0, 4)).toEqual(u32(5));
    expect(c.strays).toEqual([]);
    await expectAlive(c);
  });

  it('a tiny VERSION request leaves no room for capabilities: still served', async () => {
    const c = await plain.connect({ capabilities: '{}' });
    expect(c.server!.capabilities.writeMultiple).toBe(false);
    const payload = encodeRegionWriteMultiRequest(0, [entry(Reg.SCRATCH1, 4, u32(7))], false).subarray(16);
    const reply = await rawRequest(c, { command: VfioUserCommand.REGION_WRITE_MULTI }, payload);
    expect(reply.message.byteLength).toBe(24);
    expect(await c.regionRead(PciRegion.BAR0, Reg.SCRATCH1, 4)).toEqual(u32(7));
  });
});
