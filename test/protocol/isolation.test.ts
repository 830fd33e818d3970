/** Two devices in one process: a client that misbehaves on one does not disturb the other. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import { createConnection } from 'node:net';
import { VfioUserCommand, Limits, PciIrq, PciRegion } from '../../protocol/constants.js';
import { encodeVersionRequest } from '../../protocol/version.js';
import { fdBaseline, type FdBaseline } from '../helpers/fds.js';
import { startDevice, expectAlive, rawMessage, fields, type RunningDevice } from '../helpers/harness.js';
import { Reg } from '../helpers/test-device.js';

let fds: FdBaseline;
let a: RunningDevice;
let b: RunningDevice;

beforeEach(async () => {
  fds = fdBaseline();
  a = await startDevice();
  b = await startDevice();
});

afterEach(async () => {
  await a.stop();
  await b.stop();
  await fds.settle();
});

describe('isolation', () => {
  it('garbage, oversized and truncated messages on device A; device B keeps working meanwhile', async () => {
    const good = await b.connect();
    await good.enableIrqs(PciIrq.MSIX, 1);
    const bad = await a.connect();
    const junk = new Uint8Array(4096).map((_, i) => (i * 7919) & 0xff);
    await bad.sendRaw(junk, [], { expectId: null });
    await bad.sendRaw(
      rawMessage({ id: 1, command: VfioUserCommand.REGION_WRITE, size: Limits.MAX_MESSAGE_SIZE * 4 }),
      [],
      { expectId: null },
    );
    const efd = native.eventfd(0);
    await bad.sendRaw(rawMessage({ id: 2, command: 3, size: 4 }), [efd], { expectId: null });
    native.closeFd(efd);
    for (let i = 0; i < 50; i++) {
      expect(await good.cfg16(0)).toBeGreaterThan(0);
      await good.regionWrite(PciRegion.BAR0, Reg.IRQ, new Uint8Array(4));
      await good.waitForIrq(PciIrq.MSIX, 0, 5000);
    }
    bad.close();
    const again = await a.connect();
    await expectAlive(again);
    expect(b.device.detaches).toBe(0);
  });

  it('a client that never reads its replies does not block the other device (or its own server)', async () => {
    // A raw peer (node:net, deliberately not our client) that writes requests and never reads.
    const sock = createConnection({ path: a.socketPath });
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    sock.pause();
    const version = encodeVersionRequest(1, { major: 0, minor: 0, json: '{"capabilities":{"max_msg_fds":1}}' });
    sock.write(version);
    for (let i = 0; i < 400; i++) {
      // 16 KiB replies: far more than the socket buffers hold.
      sock.write(
        rawMessage(
          { id: 2 + i, command: VfioUserCommand.REGION_READ },
          fields(['u64', 0], ['u32', PciRegion.BAR2], ['u32', 0x4000]),
        ),
      );
    }
    const good = await b.connect();
    for (let i = 0; i < 20; i++) await expectAlive(good);
    sock.destroy();
    const again = await a.connect();
    await expectAlive(again);
  });
});
