/** GET_INFO, GET_REGION_INFO, GET_IRQ_INFO, GET_REGION_IO_FDS: bad argsz, short payloads, bad indexes -> EINVAL, alive. */
import { describe, expect, it } from 'vitest';
import { VfioUserCommand, Errno, PciRegion } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import { expectAlive, expectErrorReply, rawRequest, fields } from '../helpers/harness.js';
import type { VfioUserClient } from '../../client/index.js';

let c: VfioUserClient;

connectedEachTest((client) => {
  c = client;
});

type Case = [string, number, Uint8Array];
const u32s = (...v: number[]) => fields(...v.map((x) => ['u32', x] as ['u32', number]));

const cases: Case[] = [
  ['GET_INFO payload 12 bytes', VfioUserCommand.DEVICE_GET_INFO, u32s(16, 0, 0)],
  ['GET_INFO argsz 15', VfioUserCommand.DEVICE_GET_INFO, u32s(15, 0, 0, 0)],
  ['GET_INFO argsz 0', VfioUserCommand.DEVICE_GET_INFO, u32s(0, 0, 0, 0)],
  ['GET_REGION_INFO payload 16 bytes', VfioUserCommand.DEVICE_GET_REGION_INFO, u32s(32, 0, 7, 0)],
  ['GET_REGION_INFO argsz 31', VfioUserCommand.DEVICE_GET_REGION_INFO, u32s(31, 0, 7, 0, 0, 0, 0, 0)],
  ['GET_REGION_INFO index 9 (= num_regions)', VfioUserCommand.DEVICE_GET_REGION_INFO, u32s(32, 0, 9, 0, 0, 0, 0, 0)],
  ['GET_REGION_INFO index 0xffffffff', VfioUserCommand.DEVICE_GET_REGION_INFO, u32s(32, 0, 0xffffffff, 0, 0, 0, 0, 0)],
  ['GET_IRQ_INFO payload 8 bytes', VfioUserCommand.DEVICE_GET_IRQ_INFO, u32s(16, 0)],
  ['GET_IRQ_INFO argsz 8', VfioUserCommand.DEVICE_GET_IRQ_INFO, u32s(8, 0, 0, 0)],
  ['GET_IRQ_INFO index 5 (= num_irqs)', VfioUserCommand.DEVICE_GET_IRQ_INFO, u32s(16, 0, 5, 0)],
  ['GET_IRQ_INFO index 0x80000000', VfioUserCommand.DEVICE_GET_IRQ_INFO, u32s(16, 0, 0x80000000, 0)],
  ['GET_REGION_IO_FDS flags != 0', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(4096, 1, 0, 0)],
  ['GET_REGION_IO_FDS count != 0', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(4096, 0, 0, 1)],
  ['GET_REGION_IO_FDS bad index', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(4096, 0, 99, 0)],
  ['GET_REGION_IO_FDS argsz < 16', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(8, 0, 0, 0)],
  ['GET_REGION_IO_FDS argsz > 1 MiB', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(0x100001, 0, 0, 0)],
  ['GET_REGION_IO_FDS region with no flags (BAR1)', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(4096, 0, PciRegion.BAR1, 0)],
  ['GET_REGION_IO_FDS payload 12 bytes', VfioUserCommand.DEVICE_GET_REGION_IO_FDS, u32s(4096, 0, 0)],
];

describe('info commands: bad input', () => {
  for (const [what, cmd, payload] of cases) {
    it(`${what} -> EINVAL, alive`, async () => {
      expectErrorReply(await rawRequest(c, { command: cmd }, payload), Errno.EINVAL);
      await expectAlive(c);
    });
  }

  it('GET_INFO with a larger argsz: the reply is still 16 bytes of payload', async () => {
    const reply = await rawRequest(c, { command: VfioUserCommand.DEVICE_GET_INFO }, u32s(1024, 0, 0, 0));
    expect(reply.message.byteLength).toBe(32);
  });

  it('GET_REGION_INFO reply never exceeds the request argsz (caps that do not fit are dropped, with no fd)', async () => {
    for (const argsz of [32, 33, 40, 47]) {
      const reply = await rawRequest(c, { command: VfioUserCommand.DEVICE_GET_REGION_INFO }, u32s(argsz, 0, PciRegion.BAR2, 0, 0, 0, 0, 0));
      expect(reply.message.byteLength - 16).toBeLessThanOrEqual(Math.max(32, argsz));
      expect(reply.fds).toEqual([]);
    }
  });

  it('extra trailing bytes after a valid GET_IRQ_INFO are tolerated', async () => {
    const reply = await rawRequest(c, { command: VfioUserCommand.DEVICE_GET_IRQ_INFO }, u32s(16, 0, 2, 0, 0xdead, 0xbeef));
    expect(reply.header.flags & 0x20).toBe(0);
  });
});
