/**
 * REGION_WRITE_MULTI (15): applied in order (QEMU sends it with NO_REPLY);
 * malformed batches are EINVAL. write_multiple is advertised only when the
 * server is asked to (serve({ writeMultiple: true })), but command 15 is served
 * either way: QEMU with x-send-queued=on sends it without the capability.
 */
import { describe, expect, it } from 'vitest';
import { VfioUserCommand, Errno, HeaderFlag, PciRegion } from '../../protocol/constants.js';
import { encodeRegionWriteMultiRequest } from '../../protocol/region-access.js';
import { deviceEachTest } from '../helpers/per-test.js';
import { expectAlive, expectErrorReply, rawRequest, rawMessage, fields, type RunningDevice } from '../helpers/harness.js';
import { Reg } from '../helpers/test-device.js';

let run: RunningDevice;

deviceEachTest((started) => {
  run = started;
}, undefined, { writeMultiple: true });

const u32 = (v: number) => fields(['u32', v]);
const entry = (offset: number, count: number, data: Uint8Array) => ({ offset: BigInt(offset), region: PciRegion.BAR0, count, data });

describe('REGION_WRITE_MULTI', () => {
  it('negotiated: a NO_REPLY batch is applied in order, nothing comes back', async () => {
    const c = await run.connect();
    expect(c.server.capabilities.writeMultiple).toBe(true);
    const batch = [entry(Reg.SCRATCH0, 4, u32(1)), entry(Reg.SCRATCH1, 4, u32(2)), entry(Reg.SCRATCH0, 4, u32(3)), entry(0x100, 2, new Uint8Array([0xaa, 0xbb]))];
    await c.sendRaw(encodeRegionWriteMultiRequest(c.freshId(), batch, true), [], { expectId: null });
    expect(await c.regionRead(PciRegion.BAR0, Reg.SCRATCH0, 8)).toEqual(new Uint8Array([3, 0, 0, 0, 2, 0, 0, 0]));
    expect(await c.regionRead(PciRegion.BAR0, 0x100, 2)).toEqual(new Uint8Array([0xaa, 0xbb]));
    expect(c.strays).toEqual([]);
  });

  it('negotiated, with a reply requested: the reply carries wr_cnt', async () => {
    const c = await run.connect();
    const reply = (await c.request(VfioUserCommand.REGION_WRITE_MULTI, encodeRegionWriteMultiRequest(0, [entry(0, 4, u32(9))], false).subarray(16)))!;
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
    expect(c.server.capabilities.writeMultiple).toBe(false);
    const payload = encodeRegionWriteMultiRequest(0, [entry(Reg.SCRATCH0, 4, u32(5))], false).subarray(16);
    await c.sendRaw(rawMessage({ id: c.freshId(), command: VfioUserCommand.REGION_WRITE_MULTI, flags: HeaderFlag.NO_REPLY }, payload), [], { expectId: null });
    expect(await c.regionRead(PciRegion.BAR0, Reg.SCRATCH0, 4)).toEqual(u32(5));
    expect(c.strays).toEqual([]);
    await expectAlive(c);
  });

  it('a tiny VERSION request leaves no room for capabilities: still served', async () => {
    const c = await plain.connect({ capabilities: '{}' });
    expect(c.server.capabilities.writeMultiple).toBe(false);
    const payload = encodeRegionWriteMultiRequest(0, [entry(Reg.SCRATCH1, 4, u32(7))], false).subarray(16);
    const reply = await rawRequest(c, { command: VfioUserCommand.REGION_WRITE_MULTI }, payload);
    expect(reply.message.byteLength).toBe(24);
    expect(await c.regionRead(PciRegion.BAR0, Reg.SCRATCH1, 4)).toEqual(u32(7));
  });
});
