/**
 * migrate(source, destination): the VMM's sequence with the client's own
 * guest memory. The source device copies pages of guest memory around with
 * its DMA engine while the migration runs; afterwards the destination's memory
 * equals the source's (dirty pages were found and copied), the destination
 * device has the source's registers and keeps working (DMA, interrupts), and
 * the source is left stopped.
 */
import { describe, expect, it } from 'vitest';
import { migrate, MigrationState, type VfioUserClient } from '../../client/index.js';
import { IrqSetFlag, PciIrq, PciRegion } from '../../protocol/constants.js';
import { startDevice } from '../helpers/harness.js';
import { PciTestDevice } from '../helpers/pci-test-device.js';
import { Reg } from '../helpers/test-device.js';
import { mulberry32 } from '../helpers/random.js';
import { fdBaseline } from '../helpers/fds.js';

const PAGE = 4096;
const PAGES = 32;
const BASE = 0x100000n;

function u32(value: number): Uint8Array {
  return new Uint8Array(new Uint32Array([value]).buffer);
}

async function reg(c: VfioUserClient, offset: number): Promise<number> {
  const b = await c.regionRead(PciRegion.BAR0, offset, 4);
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
}

/** Ring the DMA engine: copy `length` bytes from one guest address to another. */
async function copyJob(c: VfioUserClient, src: bigint, dst: bigint, length: number): Promise<void> {
  await c.regionWrite(PciRegion.BAR0, Reg.DMA_SRC_LO, u32(Number(src)));
  await c.regionWrite(PciRegion.BAR0, Reg.DMA_DST_LO, u32(Number(dst)));
  await c.regionWrite(PciRegion.BAR0, Reg.DMA_LEN, u32(length));
  await c.regionWrite(PciRegion.BAR0, Reg.DOORBELL, u32(1));
}

describe('migrate()', () => {
  it('moves the device and keeps guest memory in step while the device writes it', async () => {
    const fds = fdBaseline();
    const a = await startDevice(new PciTestDevice('source', { migratable: true }));
    const b = await startDevice(new PciTestDevice('destination', { migratable: true }));
    try {
      const src = await a.connect();
      const dst = await b.connect();
      const srcMem = src.createGuestMemory(PAGES * PAGE);
      const dstMem = dst.createGuestMemory(PAGES * PAGE);
      const next = mulberry32(0x3a7);
      for (let i = 0; i < srcMem.size; i++) srcMem.bytes[i] = next() & 0xff;
      await src.dmaMap({ addr: BASE, backing: srcMem });
      await dst.dmaMap({ addr: BASE, backing: dstMem });
      await src.regionWrite(PciRegion.BAR0, Reg.SCRATCH1, u32(0xc0ffee));

      // The device keeps copying pages (as a busy device DMAs) until the migration stops it.
      let jobs = 0;
      const busy = { running: true };
      const done = (async () => {
        while (busy.running) {
          const from = BASE + BigInt((next() % PAGES) * PAGE);
          const to = BASE + BigInt((next() % PAGES) * PAGE + (next() % 64) * 16);
          try {
            await copyJob(src, from, to, 256);
            jobs++;
          } catch {
            return; // the source stopped serving BAR writes (STOP_COPY)
          }
          await new Promise((r) => setTimeout(r, 2));
        }
      })();
      await new Promise((r) => setTimeout(r, 30));

      const report = await migrate(src, dst, {
        memory: [{ iova: BASE, source: srcMem.bytes, destination: dstMem.bytes }],
        maxPreCopyRounds: 3,
        // Where a VMM stops the vCPUs: the busy loop ends, then one last copy runs while dirty
        // logging is still on, so the stop-copy round always has a dirty page to send (on a loaded
        // machine the pre-copy rounds may see none of the loop's copies).
        beforeStopCopy: async () => {
          busy.running = false;
          await done;
          await copyJob(src, BASE, BASE + BigInt(PAGE), 256);
          jobs++;
        },
      });
      await done;

      expect(jobs).toBeGreaterThan(0);
      expect(report.fullPages).toBe(PAGES);
      expect(report.dirtyPages).toBeGreaterThan(0);
      expect(report.preCopyBytes).toBe(0);
      expect(report.stopCopyBytes).toBeGreaterThan(0);
      expect(Buffer.compare(dstMem.bytes, srcMem.bytes)).toBe(0);
      expect(await src.migrationState()).toBe(MigrationState.STOP);
      expect(await dst.migrationState()).toBe(MigrationState.RUNNING);
      expect(await reg(dst, Reg.SCRATCH1)).toBe(0xc0ffee);
      expect(await reg(dst, Reg.JOBS)).toBe(await reg(src, Reg.JOBS));

      // The destination works: a DMA job and its interrupt.
      await dst.enableIrqs(PciIrq.MSIX, 4);
      await copyJob(dst, BASE, BASE + BigInt(PAGE), 64);
      expect(await dst.waitForIrq(PciIrq.MSIX, 0, 2000)).toBeGreaterThanOrEqual(1);
      expect(dstMem.read(PAGE, 64)).toEqual(dstMem.read(0, 64));
    } finally {
      await a.stop();
      await b.stop();
    }
    await fds.settle();
  });

  it('an interrupt pending on the source fires on the destination once its eventfd is there', async () => {
    const a = await startDevice(new PciTestDevice('source', { migratable: true }));
    const b = await startDevice(new PciTestDevice('destination', { migratable: true }));
    try {
      const src = await a.connect();
      const dst = await b.connect();
      // MSI-X enabled with no eventfd for vector 2 yet (QEMU installs them as the guest unmasks): it pends.
      await src.setIrqs({
        flags: IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER,
        index: PciIrq.MSIX,
        start: 0,
        count: 1,
      });
      await src.regionWrite(PciRegion.BAR0, Reg.IRQ, u32(2));
      expect(a.device.irq.isPending(PciIrq.MSIX, 2)).toBe(true);
      await migrate(src, dst);
      expect(b.device.irq.isPending(PciIrq.MSIX, 2)).toBe(true);
      expect(b.device.irq.mode).toBe('msix');
      await dst.enableIrqs(PciIrq.MSIX, 4);
      expect(await dst.waitForIrq(PciIrq.MSIX, 2, 2000)).toBe(1);
      expect(b.device.irq.isPending(PciIrq.MSIX, 2)).toBe(false);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('without PRE_COPY and without memory: stop-copy only', async () => {
    const a = await startDevice(new PciTestDevice('source', { migratable: true }));
    const b = await startDevice(new PciTestDevice('destination', { migratable: true }));
    try {
      const src = await a.connect();
      const dst = await b.connect();
      await src.regionWrite(PciRegion.BAR0, Reg.SCRATCH0, u32(42));
      const report = await migrate(src, dst, { preCopy: false });
      expect(report).toMatchObject({ preCopyBytes: 0, rounds: 0, fullPages: 0, dirtyPages: 0 });
      expect(await reg(dst, Reg.SCRATCH0)).toBe(42);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('a destination that refuses the state fails the migration and stays RESUMING', async () => {
    const a = await startDevice(new PciTestDevice('source', { migratable: true }));
    const b = await startDevice(new PciTestDevice('destination', { migratable: true, bar2Size: 0x8000 }));
    try {
      const src = await a.connect();
      const dst = await b.connect();
      await expect(migrate(src, dst)).rejects.toMatchObject({ code: 'EINVAL' });
      expect(await dst.migrationState()).toBe(MigrationState.RESUMING);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
