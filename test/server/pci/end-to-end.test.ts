/**
 * The example devices served on a real UNIX socket and driven by the
 * TypeScript client: region info, BAR sizing, RO/RW1C bits, capability walk,
 * MSI-X enable and delivery through real eventfds, DMA through a shared memfd
 * and through DMA_READ/DMA_WRITE messages, reset, and no fd leaks.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../../client/index.js';
import { createMinimalDevice, MAGIC, MinimalReg } from '../../../examples/minimal-device.js';
import { createDmaDevice, DmaReg } from '../../../examples/dma-device.js';
import { CapId, ExtCapId, type PciDevice } from '../../../server/pci/index.js';
import { serve, type DeviceServer } from '../../../server/server.js';
import { DeviceFlag, IrqSetFlag, PciIrq, PciRegion, RegionCap, RegionFlag } from '../../../protocol/constants.js';
import { listOpenFds, describeFds } from '../../helpers/fds.js';
import { tempSocketPath } from '../../helpers/temp.js';
import { leBytes, leValue } from './helpers.js';

let baseline: number[];
let socket: { path: string; remove(): void };
let server: DeviceServer | undefined;
let device: PciDevice | undefined;
let client: VfioUserClient | undefined;

async function start(dev: PciDevice): Promise<VfioUserClient> {
  device = dev;
  server = await serve(dev, { socketPath: socket.path });
  client = await VfioUserClient.connect(socket.path);
  return client;
}

/** Memory decoding and bus mastering on, as a guest driver sets them before the device may DMA or send MSI-X. */
async function enableBusMaster(c: VfioUserClient): Promise<void> {
  await c.cfgWrite16(0x04, 0x0006);
}

const u32 = (v: number): Uint8Array => leBytes(v, 4);

beforeEach(() => {
  baseline = listOpenFds();
  socket = tempSocketPath('pci');
});

afterEach(async () => {
  client?.close();
  await client?.closed;
  await server?.close();
  device?.close();
  client = undefined;
  server = undefined;
  device = undefined;
  socket.remove();
  const now = listOpenFds();
  const leaked = now.filter((fd) => !baseline.includes(fd));
  expect(leaked, describeFds(leaked)).toEqual([]);
});

describe('minimal device over a socket', () => {
  it('describes itself: device info, regions, BAR sizes, capabilities', async () => {
    const c = await start(createMinimalDevice());
    const info = await c.getDeviceInfo();
    expect(info.flags & (DeviceFlag.PCI | DeviceFlag.RESET)).toBe(DeviceFlag.PCI | DeviceFlag.RESET);
    expect(info).toMatchObject({ numRegions: 9, numIrqs: 5 });
    const bar0 = await c.getRegionInfo(0);
    expect(bar0).toMatchObject({ size: 0x1000n, flags: RegionFlag.READ | RegionFlag.WRITE });
    const cfg = await c.getRegionInfo(PciRegion.CONFIG);
    expect(cfg.size).toBe(256n);
    expect((await c.getRegionInfo(PciRegion.VGA)).size).toBe(0n);
    expect(await c.probeBar(0)).toMatchObject({ type: 'mem32', size: 0x1000n });
    expect(await c.probeBar(1)).toMatchObject({ type: 'mem32', size: 0x1000n }); // the MSI-X BAR
    expect(await c.probeBar(2)).toMatchObject({ type: 'none' });
    const caps = await c.capabilities();
    expect(caps.map((cap) => cap.id)).toEqual([CapId.MSIX]);
    expect(await c.cfg16(0)).toBe(0x1b36);
    expect((await c.getIrqInfo(PciIrq.MSIX)).count).toBe(2);
  });

  it('keeps read-only bits and clears RW1C bits', async () => {
    const c = await start(createMinimalDevice());
    await c.cfgWrite16(0x00, 0xffff);
    expect(await c.cfg16(0x00)).toBe(0x1b36);
    await c.cfgWrite16(0x04, 0xffff);
    expect(await c.cfg16(0x04)).toBe(0x0546);
    device!.config.setU16(0x06, device!.config.u16(0x06) | 0x4000);
    await c.cfgWrite16(0x06, 0x4000);
    expect((await c.cfg16(0x06)) & 0x4000).toBe(0);
    expect((await c.cfg16(0x06)) & 0x10).toBe(0x10);
  });

  it('register reads/writes reach the handlers; MSI-X as QEMU enables it delivers through a real eventfd', async () => {
    const c = await start(createMinimalDevice());
    expect(leValue(await c.regionRead(0, MinimalReg.MAGIC, 4))).toBe(MAGIC);
    await c.regionWrite(0, MinimalReg.SCRATCH, u32(0x1234));
    expect(leValue(await c.regionRead(0, MinimalReg.SCRATCH, 4))).toBe(0x1234);
    // 8-byte access: two 4-byte handler calls, low first.
    expect(leValue(await c.regionRead(0, MinimalReg.MAGIC, 8))).toBe(MAGIC + 0x1234 * 2 ** 32);

    // "Enable MSI-X with no vectors", then vector 1's eventfd.
    await enableBusMaster(c);
    await c.setIrqs({
      flags: IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER,
      index: PciIrq.MSIX,
      start: 0,
      count: 1,
    });
    await c.regionWrite(0, MinimalReg.DOORBELL, u32(1)); // pends: no eventfd for vector 1 yet
    const pba = leValue(await c.regionRead(1, device!.msixLayout!.pbaOffset, 8));
    expect(pba).toBe(2);
    await c.enableIrqs(PciIrq.MSIX, 1, 1); // the pending vector fires on install
    expect(await c.waitForIrq(PciIrq.MSIX, 1)).toBeGreaterThanOrEqual(1);
    expect(leValue(await c.regionRead(1, device!.msixLayout!.pbaOffset, 8))).toBe(0);
    const again = c.waitForIrq(PciIrq.MSIX, 1);
    await c.regionWrite(0, MinimalReg.DOORBELL, u32(1), { posted: true });
    expect(await again).toBeGreaterThanOrEqual(1);
    expect(leValue(await c.regionRead(0, MinimalReg.RINGS, 4))).toBe(2);

    // DEVICE_RESET returns the registers to power-on state.
    await c.reset();
    expect(leValue(await c.regionRead(0, MinimalReg.RINGS, 4))).toBe(0);
  });

  it('falls back to INTx with automask and UNMASK', async () => {
    const c = await start(createMinimalDevice());
    await c.enableIrqs(PciIrq.INTX, 1);
    const first = c.waitForIrq(PciIrq.INTX, 0);
    await c.regionWrite(0, MinimalReg.DOORBELL, u32(0));
    expect(await first).toBe(1);
    expect((await c.cfg16(0x06)) & 0x8).toBe(0x8);
    await c.regionWrite(0, MinimalReg.DOORBELL, u32(1)); // masked: pends
    const second = c.waitForIrq(PciIrq.INTX, 0);
    await c.setIrqs({ flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, index: PciIrq.INTX, start: 0, count: 1 });
    expect(await second).toBeGreaterThanOrEqual(1);
  });
});

describe('DMA device over a socket', () => {
  /** Run a job; its MSI-X says it is done (with bus mastering off no MSI-X can come: poll STATUS). */
  async function fill(c: VfioUserClient, addr: bigint, len: number, seed: number, op = 1, irq = true): Promise<number> {
    await c.regionWrite(0, DmaReg.ADDR_LO, u32(Number(addr & 0xffffffffn)));
    await c.regionWrite(0, DmaReg.ADDR_HI, u32(Number(addr >> 32n)));
    await c.regionWrite(0, DmaReg.LEN, u32(len));
    await c.regionWrite(0, DmaReg.SEED, u32(seed));
    const done = irq ? c.waitForIrq(PciIrq.MSIX, 0) : undefined;
    await c.regionWrite(0, DmaReg.DOORBELL, u32(op));
    if (done) await done;
    for (let i = 0; !irq && i < 500 && leValue(await c.regionRead(0, DmaReg.STATUS, 4)) === 0; i++)
      await new Promise((r) => setTimeout(r, 2));
    return leValue(await c.regionRead(0, DmaReg.STATUS, 4));
  }

  it('fills guest memory through a shared memfd and through DMA_WRITE messages', async () => {
    const c = await start(createDmaDevice());
    const caps = await c.capabilities();
    expect(caps.filter((cap) => !cap.extended).map((cap) => cap.id)).toEqual([
      CapId.PM,
      CapId.MSI,
      CapId.MSIX,
      CapId.EXPRESS,
    ]);
    expect(caps.some((cap) => cap.extended && cap.id === ExtCapId.DSN)).toBe(false);
    expect((await c.getRegionInfo(PciRegion.CONFIG)).size).toBe(4096n);
    await c.enableIrqs(PciIrq.MSIX, 1);

    // Bus mastering off: the device refuses (and its MSI-X, a memory write, is dropped).
    const irqs = c.irqCount(PciIrq.MSIX, 0);
    expect(await fill(c, 0x10000n, 16, 0, 1, false)).toBe((0x80000000 | 1) >>> 0);
    expect(c.irqCount(PciIrq.MSIX, 0)).toBe(irqs);
    await c.cfgWrite16(0x04, 0x0006);

    const shared = c.createGuestMemory(0x10000);
    await c.dmaMap({ addr: 0x100000n, backing: shared });
    expect(await fill(c, 0x100010n, 300, 7)).toBe(1);
    expect(shared.bytes[0x10]).toBe(7);
    expect(shared.bytes[0x10 + 299]).toBe((7 + 299) & 0xff);
    expect(shared.bytes[0x10 + 300]).toBe(0);
    const servedBefore = c.served.dmaWrite;

    const plain = new Uint8Array(0x4000);
    await c.dmaMap({ addr: 0x200000n, backing: plain, shareFd: false });
    expect(await fill(c, 0x200100n, 0x2000, 0x80)).toBe(1);
    expect(plain[0x100]).toBe(0x80);
    expect(plain[0x100 + 0x1fff]).toBe((0x80 + 0x1fff) & 0xff);
    expect(c.served.dmaWrite).toBeGreaterThan(servedBefore);

    // Reading guest memory: through the memfd, then through DMA_READ messages.
    const sum = (bytes: Uint8Array): number => bytes.reduce((s, b) => s + b, 0);
    expect(await fill(c, 0x100010n, 300, 0, 2)).toBe(1);
    expect(leValue(await c.regionRead(0, DmaReg.SUM, 4))).toBe(sum(shared.bytes.subarray(0x10, 0x10 + 300)));
    const readsBefore = c.served.dmaRead;
    expect(await fill(c, 0x200000n, 0x4000, 0, 2)).toBe(1);
    expect(leValue(await c.regionRead(0, DmaReg.SUM, 4))).toBe(sum(plain));
    expect(c.served.dmaRead).toBeGreaterThan(readsBefore);

    // Unmapped address: the device reports the error instead of crashing.
    expect((await fill(c, 0x900000n, 16, 0)) & 0x80000000).not.toBe(0);

    await c.dmaUnmapAll();
    shared.close();
  });

  it('exposes a memory-backed BAR the client can map', async () => {
    const { PciDevice } = await import('../../../server/pci/index.js');
    const dev = new PciDevice({
      name: 'membar',
      id: { vendor: 0x1b36, device: 0x0007, classCode: 0xff0000 },
      bars: [
        {
          index: 2,
          size: 0x4000,
          type: 'mem64',
          prefetchable: true,
          memory: [{ offset: 0x2000, size: 0x2000 }],
          read: () => 0xabcd,
        },
      ],
    });
    const c = await start(dev);
    const info = await c.getRegionInfo(2);
    expect(info.flags & RegionFlag.MMAP).toBe(RegionFlag.MMAP);
    expect(info.fd).toBeTypeOf('number');
    const sparse = info.caps.find((cap) => cap.id === RegionCap.SPARSE_MMAP);
    expect(sparse).toEqual({ id: RegionCap.SPARSE_MMAP, areas: [{ offset: 0x2000n, size: 0x2000n }] });
    const { native } = await import('../../../native/index.js');
    const map = native.mmapFd(info.fd!, 0x2000, 0x2000, native.PROT_READ | native.PROT_WRITE);
    native.closeFd(info.fd!);
    new Uint8Array(map.buffers[0]!)[4] = 0x5a;
    expect(dev.barMemory(2)[0x2004]).toBe(0x5a);
    expect((await c.regionRead(2, 0x2004, 1))[0]).toBe(0x5a);
    expect(leValue(await c.regionRead(2, 0, 2))).toBe(0xabcd);
    map.unmap();
    expect((await c.getRegionInfo(3)).size).toBe(0n);
  });
});
