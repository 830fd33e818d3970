/** Happy path of every client command over a real socket, against a real device. */
import { describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import { VfioUserCommand, DeviceFlag, IrqInfoFlag, IrqSetFlag, PciIrq, PciRegion, RegionCap, RegionFlag, Errno } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import { expectErrno, DEVICE_KINDS, type RunningDevice } from '../helpers/harness.js';
import { BAR0_SIZE, BAR2_SIZE, CONFIG_SIZE, MSIX_VECTORS, Reg, TEST_DEVICE, TEST_VENDOR } from '../helpers/test-device.js';
import type { VfioUserClient } from '../../client/index.js';

let run: RunningDevice;
let client: VfioUserClient;

function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

describe.each(DEVICE_KINDS)('every command, happy path (%s)', (_kind, make) => {
  connectedEachTest((connected, started) => {
    client = connected;
    run = started;
  }, make);

  it('VERSION: negotiated capabilities', () => {
    const caps = client.server.capabilities;
    expect(client.server.major).toBe(0);
    expect(client.server.minor).toBe(0);
    expect(caps.maxDataXferSize).toBeGreaterThanOrEqual(CONFIG_SIZE);
    expect(caps.maxMsgFds).toBeGreaterThanOrEqual(1);
    expect(caps.maxMsgFds).toBeLessThanOrEqual(16);
    expect(caps.pgsizes % 4096).toBe(0);
  });

  it('DEVICE_GET_INFO', async () => {
    const info = await client.getDeviceInfo();
    expect(info.numRegions).toBe(PciRegion.COUNT);
    expect(info.numIrqs).toBe(PciIrq.COUNT);
    expect(info.flags & DeviceFlag.PCI).toBe(DeviceFlag.PCI);
    expect(info.flags & DeviceFlag.RESET).toBe(DeviceFlag.RESET);
  });

  it('DEVICE_GET_REGION_INFO: plain regions and the absent ones', async () => {
    const cfg = await client.getRegionInfo(PciRegion.CONFIG);
    expect(cfg).toMatchObject({ index: PciRegion.CONFIG, size: BigInt(CONFIG_SIZE), caps: [] });
    expect(cfg.flags & (RegionFlag.READ | RegionFlag.WRITE)).toBe(RegionFlag.READ | RegionFlag.WRITE);
    expect(cfg.fd).toBeUndefined();
    const bar0 = await client.getRegionInfo(PciRegion.BAR0);
    expect(bar0.size).toBe(BigInt(BAR0_SIZE));
    const bar1 = await client.getRegionInfo(PciRegion.BAR1);
    expect(bar1.size).toBe(0n);
  });

  it('DEVICE_GET_REGION_INFO: an mmappable region comes with its sparse cap and fd, only when argsz fits', async () => {
    const short = await client.getRegionInfo(PciRegion.BAR2, 32);
    expect(short.argsz).toBeGreaterThan(32);
    expect(short.flags & RegionFlag.CAPS).toBe(0);
    expect(short.caps).toEqual([]);
    expect(short.fd).toBeUndefined();

    const full = await client.getRegionInfo(PciRegion.BAR2);
    try {
      expect(full.flags & RegionFlag.MMAP).toBe(RegionFlag.MMAP);
      expect(full.flags & RegionFlag.CAPS).toBe(RegionFlag.CAPS);
      expect(full.caps).toEqual([{ id: RegionCap.SPARSE_MMAP, areas: [{ offset: 0n, size: BigInt(BAR2_SIZE) }] }]);
      expect(full.fd).toBeTypeOf('number');
      // The fd really is the region: write through a mapping, read by message.
      const map = native.mmapFd(full.fd!, Number(full.offset), BAR2_SIZE, native.PROT_READ | native.PROT_WRITE);
      new Uint8Array(map.buffers[0]!).set([1, 2, 3, 4], 0x100);
      expect([...(await client.regionRead(PciRegion.BAR2, 0x100, 4))]).toEqual([1, 2, 3, 4]);
      await client.regionWrite(PciRegion.BAR2, 0x200, new Uint8Array([9, 8, 7]));
      expect([...new Uint8Array(map.buffers[0]!, 0x200, 3)]).toEqual([9, 8, 7]);
      map.unmap();
    } finally {
      if (full.fd !== undefined) native.closeFd(full.fd);
    }
  });

  it('DEVICE_GET_REGION_IO_FDS: answered (no ioeventfds) or refused with EINVAL, never a hang', async () => {
    try {
      const r = await client.getRegionIoFds(PciRegion.BAR0);
      for (const fd of r.fds) native.closeFd(fd);
      expect(r.index).toBe(PciRegion.BAR0);
    } catch (err) {
      expect((err as { errno: number }).errno).toBe(Errno.EINVAL);
    }
  });

  it('DEVICE_GET_IRQ_INFO for every index', async () => {
    const counts = [1, 1, MSIX_VECTORS, 1, 1];
    for (let i = 0; i < PciIrq.COUNT; i++) {
      const info = await client.getIrqInfo(i);
      expect(info.index).toBe(i);
      expect(info.count).toBe(counts[i]);
      expect(info.flags & IrqInfoFlag.EVENTFD).toBe(IrqInfoFlag.EVENTFD);
    }
  });

  it('DEVICE_SET_IRQS with eventfds: the device signals them', async () => {
    await client.enableIrqs(PciIrq.MSIX, MSIX_VECTORS);
    await client.regionWrite(PciRegion.BAR0, Reg.IRQ, u32(3));
    expect(await client.waitForIrq(PciIrq.MSIX, 3, 5000)).toBe(1);
    await client.regionWrite(PciRegion.BAR0, Reg.IRQ, u32(0));
    expect(await client.waitForIrq(PciIrq.MSIX, 0, 5000)).toBe(1);
    // NONE|TRIGGER fires a vector from the client side.
    await client.setIrqs({ flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, index: PciIrq.MSIX, start: 1, count: 1 });
    expect(await client.waitForIrq(PciIrq.MSIX, 1, 5000)).toBe(1);
    // BOOL|TRIGGER fires where data is 1.
    await client.setIrqs({ flags: IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER, index: PciIrq.MSIX, start: 0, count: 4, data: new Uint8Array([0, 0, 1, 0]) });
    expect(await client.waitForIrq(PciIrq.MSIX, 2, 5000)).toBe(1);
    await client.disableIrqs(PciIrq.MSIX);
    for (let v = 0; v < MSIX_VECTORS; v++) expect(run.device.hasEventfd(PciIrq.MSIX, v)).toBe(false);
  });

  it('DEVICE_SET_IRQS: INTx mask, unmask and the resample fd', async () => {
    await client.enableIrqs(PciIrq.INTX, 1);
    await client.setIrqs({ flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK, index: PciIrq.INTX, start: 0, count: 1 });
    const resample = native.eventfd(0);
    await client.setIrqs({ flags: IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_UNMASK, index: PciIrq.INTX, start: 0, count: 1, fds: [resample] });
    native.closeFd(resample);
    await client.setIrqs({ flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, index: PciIrq.INTX, start: 0, count: 1 });
    await client.regionWrite(PciRegion.BAR0, Reg.IRQ, u32(0));
    expect(await client.waitForIrq(PciIrq.INTX, 0, 5000)).toBe(1);
  });

  it('REGION_READ / REGION_WRITE on config space and a BAR, all access sizes', async () => {
    expect(await client.cfg16(0)).toBe(TEST_VENDOR);
    expect(await client.cfg16(2)).toBe(TEST_DEVICE);
    expect(await client.cfg32(0)).toBe(((TEST_DEVICE << 16) | TEST_VENDOR) >>> 0);
    const all = await client.regionRead(PciRegion.CONFIG, 0, CONFIG_SIZE);
    expect(all.byteLength).toBe(CONFIG_SIZE);
    for (const size of [1, 2, 4, 8]) {
      const data = new Uint8Array(size).map((_, i) => 0x10 * size + i);
      await client.regionWrite(PciRegion.BAR0, 0x100, data);
      expect([...(await client.regionRead(PciRegion.BAR0, 0x100, size))]).toEqual([...data]);
    }
    // count 0: an empty, successful read.
    expect((await client.regionRead(PciRegion.BAR0, 0, 0)).byteLength).toBe(0);
  });

  it('REGION_WRITE posted (NO_REPLY): applied in order, never answered', async () => {
    await client.regionWrite(PciRegion.BAR0, Reg.SCRATCH0, u32(0xdeadbeef), { posted: true });
    expect(await client.regionRead(PciRegion.BAR0, Reg.SCRATCH0, 4)).toEqual(u32(0xdeadbeef));
    expect(client.strays).toEqual([]);
  });

  it('PCI helpers: BAR sizing and the capability walk', async () => {
    expect(await client.probeBar(0)).toMatchObject({ type: 'mem32', size: BigInt(BAR0_SIZE), prefetchable: false });
    expect(await client.probeBar(2)).toMatchObject({ type: 'mem32', size: BigInt(BAR2_SIZE), prefetchable: true });
    expect(await client.probeBar(1)).toMatchObject({ type: 'none', size: 0n });
    expect(await client.capabilities()).toEqual(run.device.expectedCapabilities);
  });

  it('DMA_MAP / DMA_UNMAP with and without an fd, and UNMAP ALL', async () => {
    const mem = client.createGuestMemory(0x4000);
    const shared = await client.dmaMap({ addr: 0x10000n, backing: mem });
    expect(shared.shared).toBe(true);
    await client.dmaMap({ addr: 0x20000n, size: 0x1000n });
    expect(run.device.dmaRanges()).toEqual([
      { addr: 0x10000n, size: 0x4000n, mapped: true },
      { addr: 0x20000n, size: 0x1000n, mapped: false },
    ]);
    const echo = await client.dmaUnmap(0x10000n, 0x4000n);
    expect(echo).toMatchObject({ addr: 0x10000n, size: 0x4000n, flags: 0 });
    await client.dmaUnmapAll();
    expect(run.device.dmaRanges()).toEqual([]);
  });

  it('DEVICE_RESET reaches the device and keeps DMA maps and IRQ fds', async () => {
    await client.enableIrqs(PciIrq.MSIX, 1);
    await client.dmaMap({ addr: 0x1000n, size: 0x1000n });
    await client.regionWrite(PciRegion.BAR0, Reg.SCRATCH0, u32(7));
    await client.reset();
    expect(run.device.resets).toEqual(['client']);
    expect(await client.regionRead(PciRegion.BAR0, Reg.SCRATCH0, 4)).toEqual(u32(0));
    expect(run.device.dmaRanges().length).toBe(1);
    expect(run.device.hasEventfd(PciIrq.MSIX, 0)).toBe(true);
  });

  it('DEVICE_FEATURE without migration: EINVAL, connection alive', async () => {
    await expectErrno(client.deviceFeature(1 | (1 << 16), new Uint8Array(8)), Errno.EINVAL);
    expect((await client.getDeviceInfo()).numIrqs).toBe(PciIrq.COUNT);
  });

  it('raw request(): a command built by hand', async () => {
    const payload = new Uint8Array(16);
    new DataView(payload.buffer).setUint32(0, 16, true);
    const reply = (await client.request(VfioUserCommand.DEVICE_GET_INFO, payload))!;
    expect(reply.message.byteLength).toBe(32);
    expect(reply.header.command).toBe(VfioUserCommand.DEVICE_GET_INFO);
  });
});
