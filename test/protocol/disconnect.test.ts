/**
 * Client disconnect: the device is detached (DMA unmapped, IRQ eventfds
 * closed, reset 'lost-connection'), every fd is released, and a new client can
 * connect, also when the client vanishes mid-request or mid-DMA.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import { VfioUserCommand, PciIrq, PciRegion } from '../../protocol/constants.js';
import { fdBaseline } from '../helpers/fds.js';
import { deviceEachTest } from '../helpers/per-test.js';
import { expectAlive, rawMessage, fields, DEVICE_KINDS, type RunningDevice } from '../helpers/harness.js';
import { Reg } from '../helpers/test-device.js';

let run: RunningDevice;

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe.each(DEVICE_KINDS)('disconnect (%s)', (_kind, make) => {
  deviceEachTest((started) => {
    run = started;
  }, make);

  it('releases DMA maps, eventfds and fds; the next client connects', async () => {
    const during = fdBaseline();
    const c = await run.connect();
    const mem = c.createGuestMemory(0x8000);
    await c.dmaMap({ addr: 0x100000n, backing: mem });
    await c.dmaMap({ addr: 0x200000n, size: 0x1000n });
    await c.enableIrqs(PciIrq.MSIX, 4);
    await c.enableIrqs(PciIrq.INTX, 1);
    const region = await c.getRegionInfo(PciRegion.BAR2);
    native.closeFd(region.fd!);
    expect(run.device.dmaRanges().length).toBe(2);
    c.close();
    await until(() => run.device.detaches === 1, 'detach');
    expect(run.device.dmaRanges()).toEqual([]);
    for (const [index, n] of [
      [PciIrq.INTX, 1],
      [PciIrq.MSIX, 4],
    ] as const)
      for (let v = 0; v < n; v++) expect(run.device.hasEventfd(index, v)).toBe(false);
    expect(run.device.resets).toContain('lost-connection');
    await during.settle();

    const next = await run.connect();
    await expectAlive(next);
    expect(run.device.attaches).toBe(2);
  });

  it('many connect/disconnect cycles leak nothing', async () => {
    for (let i = 0; i < 30; i++) {
      const c = await run.connect();
      if (i % 3 === 0) await c.enableIrqs(PciIrq.MSIX, 2);
      if (i % 2 === 0) await c.dmaMap({ addr: 0x1000n, backing: c.createGuestMemory(0x1000) });
      await c.cfg16(0);
      c.close();
    }
    await until(() => run.device.detaches === 30, '30 detaches');
    const last = await run.connect();
    await expectAlive(last);
  });

  it('hang-up with requests in flight and a partial message', async () => {
    const c = await run.connect();
    for (let i = 0; i < 20; i++) void c.cfg32(0).catch(() => undefined);
    await c.sendRaw(rawMessage({ id: 1, command: VfioUserCommand.REGION_READ, size: 32 }, fields(['u64', 0])), [], {
      expectId: null,
    });
    c.close();
    const next = await run.connect();
    await expectAlive(next);
  });

  it('hang-up while the device waits on a DMA_READ the client never answers', async () => {
    const c = await run.connect();
    await c.enableIrqs(PciIrq.MSIX, 1);
    await c.dmaMap({ addr: 0x300000n, size: 0x1000n });
    // Make the client's socket stop answering: close it right after ringing the doorbell.
    const w = (reg: number, v: number) => c.regionWrite(PciRegion.BAR0, reg, fields(['u32', v]));
    await w(Reg.DMA_SRC_LO, 0x300000);
    await w(Reg.DMA_DST_LO, 0x300800);
    await w(Reg.DMA_LEN, 0x100);
    await c.regionWrite(PciRegion.BAR0, Reg.DOORBELL, fields(['u32', 1]), { posted: true });
    c.close();
    await until(() => run.device.detaches === 1, 'detach');
    const next = await run.connect();
    await expectAlive(next);
  });

  it('a second client while one is attached waits its turn; the first is undisturbed', async () => {
    const first = await run.connect();
    let secondReady = false;
    const second = run.connect({ busy: true, timeoutMs: 10_000 }).then((c) => {
      secondReady = true;
      return c;
    });
    for (let i = 0; i < 5; i++) await expectAlive(first);
    expect(secondReady).toBe(false);
    first.close();
    await expectAlive(await second);
  });
});
