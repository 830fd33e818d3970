/**
 * DMA_UNMAP while the device is using the range (checklist 42: drop every
 * reference before replying). PciDevice's DmaSpace makes the unmap of an
 * fd-backed range wait for the device's hold; the device's copy completes
 * first, and afterwards the memory is gone from the device.
 */
import { describe, expect, it } from 'vitest';
import { PciIrq, PciRegion } from '../../protocol/constants.js';
import { deviceEachTest } from '../helpers/per-test.js';
import { fields, type RunningDevice } from '../helpers/harness.js';
import { PciTestDevice } from '../helpers/pci-test-device.js';
import { Reg } from '../helpers/test-device.js';

let run: RunningDevice<PciTestDevice>;

deviceEachTest((started) => {
  run = started;
}, () => new PciTestDevice());

describe('DMA_UNMAP during device DMA', () => {
  it('waits for the held job, which completes; later jobs on the range fail with EFAULT', async () => {
    const c = await run.connect();
    await c.enableIrqs(PciIrq.MSIX, 1);
    const mem = c.createGuestMemory(0x4000);
    mem.write(0, new Uint8Array(0x1000).fill(0x5a));
    await c.dmaMap({ addr: 0x100000n, backing: mem });
    const w = (reg: number, v: number) => c.regionWrite(PciRegion.BAR0, reg, fields(['u32', v]));
    await w(Reg.MODE, 1);
    await w(Reg.DMA_SRC_LO, 0x100000);
    await w(Reg.DMA_DST_LO, 0x102000);
    await w(Reg.DMA_LEN, 0x1000);
    await w(Reg.DOORBELL, 1);
    // The job now holds both ranges for ~50 ms; the unmap must not complete before it.
    await c.dmaUnmap(0x100000n, 0x4000n);
    const status = await c.regionRead(PciRegion.BAR0, Reg.STATUS, 4);
    expect(new DataView(status.buffer, status.byteOffset).getUint32(0, true)).toBe(1);
    expect(mem.read(0x2000, 0x1000)).toEqual(new Uint8Array(0x1000).fill(0x5a));
    await c.waitForIrq(PciIrq.MSIX, 0, 5000);

    await w(Reg.DOORBELL, 1);
    await c.waitForIrq(PciIrq.MSIX, 0, 5000);
    const after = await c.regionRead(PciRegion.BAR0, Reg.STATUS, 4);
    expect(new DataView(after.buffer, after.byteOffset).getUint32(0, true) & 0x80000000).not.toBe(0);
    expect(run.device.dmaRanges()).toEqual([]);
  });
});
