/**
 * fds on commands that take none are closed by the server (libvfio-user:
 * "closing unexpected fd"). The server runs in this process, so its copies
 * show in /proc/self/fd; a socketpair end also proves it: when every copy of
 * one end is closed, the other end sees EOF.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import { VfioUserCommand, PciRegion } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import { expectAlive, rawRequest, fields } from '../helpers/harness.js';
import type { VfioUserClient } from '../../client/index.js';

let c: VfioUserClient;

connectedEachTest((client) => {
  c = client;
});

/** Send one end of a socketpair with a command; resolve when the server has closed its copy. */
async function sendProbeFd(command: number, payload: Uint8Array, extra = 0): Promise<void> {
  const [mine, sent] = native.socketpair();
  const others = Array.from({ length: extra }, () => native.eventfd(0));
  const eof = new Promise<string>((resolve) => {
    const ch = native.openChannel(
      mine,
      { maxMessageSize: 64, maxFds: 1 },
      () => undefined,
      (reason) => {
        ch.close();
        resolve(reason);
      },
    );
  });
  await rawRequest(c, { command }, payload, [sent, ...others]);
  native.closeFd(sent);
  for (const fd of others) native.closeFd(fd);
  expect(await eof).toBe('EOF');
}

describe('unexpected fds', () => {
  const cases: Array<[string, number, Uint8Array]> = [
    ['GET_INFO', VfioUserCommand.DEVICE_GET_INFO, fields(['u32', 16], ['u32', 0], ['u32', 0], ['u32', 0])],
    [
      'GET_REGION_INFO',
      VfioUserCommand.DEVICE_GET_REGION_INFO,
      fields(['u32', 32], ['u32', 0], ['u32', 7], ['u32', 0], ['u64', 0], ['u64', 0]),
    ],
    ['GET_IRQ_INFO', VfioUserCommand.DEVICE_GET_IRQ_INFO, fields(['u32', 16], ['u32', 0], ['u32', 0], ['u32', 0])],
    ['REGION_READ', VfioUserCommand.REGION_READ, fields(['u64', 0], ['u32', PciRegion.CONFIG], ['u32', 4])],
    ['REGION_WRITE', VfioUserCommand.REGION_WRITE, fields(['u64', 0], ['u32', PciRegion.BAR0], ['u32', 4], ['u32', 1])],
    ['DMA_UNMAP', VfioUserCommand.DMA_UNMAP, fields(['u32', 24], ['u32', 0], ['u64', 0x1000], ['u64', 0x1000])],
    ['an unknown command', 0x1234, new Uint8Array(8)],
    ['a failing REGION_READ', VfioUserCommand.REGION_READ, fields(['u64', 0], ['u32', 42], ['u32', 4])],
  ];
  for (const [what, cmd, payload] of cases) {
    it(`${what}: the fd is closed, alive`, async () => {
      await sendProbeFd(cmd, payload);
      await expectAlive(c);
    });
  }

  it('several fds on one message: all closed', async () => {
    await sendProbeFd(VfioUserCommand.DEVICE_GET_INFO, fields(['u32', 16], ['u32', 0], ['u32', 0], ['u32', 0]), 3);
    await expectAlive(c);
  });

  it('DEVICE_RESET with an fd', async () => {
    await sendProbeFd(VfioUserCommand.DEVICE_RESET, new Uint8Array(0));
    await expectAlive(c);
  });
});
