/**
 * QEMU 11.1's realize and reset sequence (qemu-client-protocol.md 3.1, 3.4,
 * 3.8), replayed with the client: every step must succeed, in order, on the
 * real device model and on the minimal one.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import {
  DeviceFlag,
  DmaMapFlag,
  IrqInfoFlag,
  IrqSetFlag as F,
  PciIrq,
  PciRegion,
  RegionFlag,
} from '../../protocol/constants.js';
import { deviceEachTest } from '../helpers/per-test.js';
import { DEVICE_KINDS, type RunningDevice } from '../helpers/harness.js';
import { MSIX_VECTORS } from '../helpers/test-device.js';
import type { VfioUserClient } from '../../client/index.js';

let run: RunningDevice;

const u32 = (v: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
};

/** What QEMU's vfio_pci_realize asks, in its order; returns the BAR sizes it learned. */
async function realize(c: VfioUserClient): Promise<Map<number, bigint>> {
  // Memory listener: guest RAM as several fd-less sections plus one fd-backed one.
  const ram = c.createGuestMemory(0x20000);
  await c.dmaMap({ addr: 0n, size: 0xa0000n });
  await c.dmaMap({ addr: 0xc0000n, size: 0x20000n, flags: DmaMapFlag.READ });
  await c.dmaMap({ addr: 0x100000n, backing: ram });

  const info = await c.getDeviceInfo();
  expect(info.flags & DeviceFlag.PCI).toBe(DeviceFlag.PCI);
  expect(info.numRegions).toBeGreaterThanOrEqual(8);
  expect(info.numRegions).toBeLessThanOrEqual(100);
  expect(info.numIrqs).toBeGreaterThanOrEqual(3);
  expect(info.numIrqs).toBeLessThanOrEqual(50);

  const sizes = new Map<number, bigint>();
  for (const index of [0, 1, 2, 3, 4, 5, PciRegion.CONFIG]) {
    const r = await c.getRegionInfo(index);
    if (r.fd !== undefined) {
      expect(r.flags & RegionFlag.MMAP).toBe(RegionFlag.MMAP);
      native.closeFd(r.fd);
    }
    if (index <= 5 && r.size > 0n) expect(r.size & (r.size - 1n)).toBe(0n); // powers of two, or QEMU aborts
    sizes.set(index, r.size);
  }
  const err = await c.getIrqInfo(PciIrq.ERR);
  expect(err.count).toBe(1);

  const cfgSize = Number(sizes.get(PciRegion.CONFIG));
  expect([256, 4096]).toContain(cfgSize);
  expect((await c.regionRead(PciRegion.CONFIG, 0, cfgSize)).byteLength).toBe(cfgSize);

  // ROM sizing: read, write the probe, read, restore. No ROM reads back 0.
  const rom = await c.cfg32(0x30);
  await c.cfgWrite32(0x30, 0xfffff800);
  const romMask = await c.cfg32(0x30);
  await c.cfgWrite32(0x30, rom);
  expect(romMask & 0xfffff800).toBe(Number(sizes.get(PciRegion.ROM) ?? 0n) === 0 ? 0 : romMask & 0xfffff800);

  // BAR type bits for every BAR with a size.
  for (let bar = 0; bar < 6; bar++) if (sizes.get(bar)! > 0n) await c.cfg32(0x10 + bar * 4);

  // MSI-X: flags, table and PBA, then NORESIZE.
  const caps = await c.capabilities();
  const msix = caps.find((x) => x.id === 0x11 && !x.extended);
  if (msix) {
    const ctrl = await c.cfg16(msix.offset + 2);
    expect((ctrl & 0x7ff) + 1).toBe(MSIX_VECTORS);
    const table = await c.cfg32(msix.offset + 4);
    const pba = await c.cfg32(msix.offset + 8);
    expect(BigInt(pba & ~7)).toBeLessThan(sizes.get(pba & 7) ?? 0n);
    expect(BigInt(table & ~7)).toBeLessThan(sizes.get(table & 7) ?? 0n);
    const irq = await c.getIrqInfo(PciIrq.MSIX);
    expect(irq.flags & IrqInfoFlag.EVENTFD).toBe(IrqInfoFlag.EVENTFD);
  }
  // INTx (pin set): eventfd + KVM-style mask / resample-unmask / unmask.
  if ((await c.cfg8(0x3d)) !== 0) {
    await c.enableIrqs(PciIrq.INTX, 1);
    await c.setIrqs({ flags: F.DATA_NONE | F.ACTION_MASK, index: PciIrq.INTX, count: 1 });
    const resample = native.eventfd(0);
    try {
      await c.setIrqs({ flags: F.DATA_EVENTFD | F.ACTION_UNMASK, index: PciIrq.INTX, count: 1, fds: [resample] });
    } finally {
      native.closeFd(resample);
    }
    await c.setIrqs({ flags: F.DATA_NONE | F.ACTION_UNMASK, index: PciIrq.INTX, count: 1 });
  }
  // AER: SET_IRQS on ERR.
  await c.enableIrqs(PciIrq.ERR, 1);
  return sizes;
}

/** QEMU's machine reset (vfio_user_pci_reset with pre/post reset). */
async function machineReset(c: VfioUserClient): Promise<void> {
  await c.setIrqs({ flags: F.DATA_NONE | F.ACTION_TRIGGER, index: PciIrq.INTX, count: 0 });
  const cmd = await c.cfg16(0x04);
  await c.cfgWrite16(0x04, cmd & ~(0x1 | 0x2 | 0x4 | 0x400));
  await c.reset();
  await c.enableIrqs(PciIrq.INTX, 1);
  for (let bar = 0; bar < 6; bar++) await c.cfgWrite32(0x10 + bar * 4, 0);
}

describe.each(DEVICE_KINDS)('QEMU realize and reset sequence (%s)', (_kind, make) => {
  deviceEachTest((started) => {
    run = started;
  }, make);

  it('realize, machine reset, MSI-X bring-up with per-vector fds, guest reboot, disconnect', async () => {
    const c = await run.connect();
    const sizes = await realize(c);
    await machineReset(c);

    // The guest driver enables MSI-X: INTx off, "enable with no vectors", then per-vector fds as they unmask.
    await c.setIrqs({ flags: F.DATA_NONE | F.ACTION_TRIGGER, index: PciIrq.INTX, count: 0 });
    await c.setIrqs({ flags: F.DATA_EVENTFD | F.ACTION_TRIGGER, index: PciIrq.MSIX, start: 0, count: 1 });
    for (let v = 0; v < MSIX_VECTORS; v++) await c.enableIrqs(PciIrq.MSIX, 1, v);
    const caps = await c.capabilities();
    const msix = caps.find((x) => x.id === 0x11);
    if (msix) await c.cfgWrite16(msix.offset + 2, 0x8000); // MSI-X enable
    await c.cfgWrite16(0x04, 0x0006); // memory + bus master
    run.device.signal(2);
    expect(await c.waitForIrq(PciIrq.MSIX, 2, 5000)).toBe(1);

    // Posted BAR writes and a reboot.
    if (sizes.get(0)! > 0n) await c.regionWrite(0, 0, u32(1), { posted: true });
    await machineReset(c);
    expect(run.device.resets.filter((r) => r === 'client').length).toBe(2);
    expect(run.device.dmaRanges().length).toBe(3);

    // Shutdown: the memory listener removes everything with UNMAP ALL, then QEMU exits.
    await c.dmaUnmapAll();
    expect(run.device.dmaRanges()).toEqual([]);
  });
});
