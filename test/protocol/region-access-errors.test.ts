/** REGION_READ / REGION_WRITE validation (libvfio-user's is_valid_region_access): EINVAL, alive. */
import { describe, expect, it } from 'vitest';
import { VfioUserCommand, Errno, PciRegion } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import { expectAlive, expectErrorReply, rawRequest, fields, expectErrno } from '../helpers/harness.js';
import { BAR0_SIZE, CONFIG_SIZE } from '../helpers/test-device.js';
import type { VfioUserClient } from '../../client/index.js';

let c: VfioUserClient;

connectedEachTest((client) => {
  c = client;
});

const access = (offset: bigint | number, region: number, count: number, data = new Uint8Array(0)) => {
  const head = fields(['u64', offset], ['u32', region], ['u32', count]);
  const p = new Uint8Array(head.byteLength + data.byteLength);
  p.set(head);
  p.set(data, head.byteLength);
  return p;
};

describe('REGION_READ / REGION_WRITE: bad input', () => {
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
    const w = await rawRequest(c, { command: VfioUserCommand.REGION_WRITE }, access(0, PciRegion.BAR0, 4, new Uint8Array(4)));
    expect(w.message.byteLength).toBe(32);
    expect(new DataView(w.message.buffer, w.message.byteOffset).getUint32(28, true)).toBe(4);
  });
});
