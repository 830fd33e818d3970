/** Two devices in one process: a client that misbehaves on one does not disturb the other. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import { Command, HEADER_SIZE, Limits, PciIrq, PciRegion } from '../../server/protocol/constants.js';
import { fdBaseline, type FdBaseline } from '../helpers/fds.js';
import { startDevice, expectAlive, rawMessage, type RunningDevice } from '../helpers/harness.js';
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
    await bad.sendRaw(rawMessage({ id: 1, command: Command.REGION_WRITE, size: Limits.MAX_MESSAGE_SIZE * 4 }), [], { expectId: null });
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

  it('a client that stops reading replies does not block the other device', async () => {
    const slow = await a.connect();
    // Many reads whose replies fill the socket buffers; the client never reads them (it closes later).
    for (let i = 0; i < 200; i++) {
      void slow.regionRead(PciRegion.CONFIG, 0, 256).catch(() => undefined);
    }
    const good = await b.connect();
    for (let i = 0; i < 20; i++) await expectAlive(good);
    slow.close();
    expect(HEADER_SIZE).toBe(16);
  });
});
