/**
 * REGION_WRITE's hot path (the posted NVMe doorbell): register-sized data is
 * copied, larger data is a view of the message; NO_REPLY writes land without
 * any reply; malformed writes are still EINVAL and the connection lives.
 */
import { describe, expect, it } from 'vitest';
import { VfioUserCommand, Errno, HeaderFlag, PciRegion } from '../../protocol/constants.js';
import type { VfioUserClient } from '../../client/index.js';
import { connectedEachTest } from '../helpers/per-test.js';
import { expectAlive, expectErrorReply, fields, rawMessage, rawRequest } from '../helpers/harness.js';

let c: VfioUserClient;

connectedEachTest((client) => {
  c = client;
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
  it('posted (NO_REPLY) writes of 1, 2, 4, 8 and 64 bytes land in order, with no reply', async () => {
    const writes: Array<[number, Uint8Array]> = [
      [0x100, bytes(1, 1)],
      [0x102, bytes(2, 2)],
      [0x104, bytes(4, 3)],
      [0x108, bytes(8, 4)],
      [0x140, bytes(64, 5)],
    ];
    for (const [offset, data] of writes) {
      await c.sendRaw(rawMessage({ id: c.freshId(), command: VfioUserCommand.REGION_WRITE, flags: HeaderFlag.NO_REPLY }, writePayload(offset, PciRegion.BAR0, data)), [], { expectId: null });
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
    expectErrorReply(await rawRequest(c, { command: VfioUserCommand.REGION_WRITE }, fields(['u64', 0], ['u32', 0])), Errno.EINVAL);
    await expectAlive(c);
  });

  it('count larger or smaller than the data is EINVAL, alive', async () => {
    expectErrorReply(await rawRequest(c, { command: VfioUserCommand.REGION_WRITE }, writePayload(0x100, PciRegion.BAR0, bytes(4, 1), 8)), Errno.EINVAL);
    expectErrorReply(await rawRequest(c, { command: VfioUserCommand.REGION_WRITE }, writePayload(0x100, PciRegion.BAR0, bytes(8, 1), 4)), Errno.EINVAL);
    await expectAlive(c);
  });

  it('a bad posted write is dropped silently and changes nothing', async () => {
    const before = await c.regionRead(PciRegion.BAR0, 0x1c0, 4);
    await c.sendRaw(rawMessage({ id: c.freshId(), command: VfioUserCommand.REGION_WRITE, flags: HeaderFlag.NO_REPLY }, writePayload(0x1c0, PciRegion.BAR0, bytes(4, 3), 2)), [], { expectId: null });
    expect(await c.regionRead(PciRegion.BAR0, 0x1c0, 4)).toEqual(before);
    await expectAlive(c);
  });
});
