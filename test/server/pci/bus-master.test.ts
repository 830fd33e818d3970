/**
 * Bus Master Enable (PCI Command bit 2) as PciDevice enforces it for every
 * device: while the guest has it clear, the device's DMA space refuses
 * every access (BusMasterDisabledError, errno ENODEV as QEMU answers a DMA
 * message then), transfers by message in progress are cut off at once, and
 * MSI/MSI-X messages (memory writes) are dropped, as QEMU's PCI core drops
 * them; INTx (a wire) still works. Resets clear the bit with the rest of
 * config space.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../../client/index.js';
import { native } from '../../../native/index.js';
import { Errno, IrqSetFlag, PciIrq } from '../../../protocol/constants.js';
import { BusMasterDisabledError } from '../../../server/dma/index.js';
import { PciDevice } from '../../../server/pci/index.js';
import { serve, type DeviceServer } from '../../../server/server.js';
import { tempSocketPath } from '../../helpers/temp.js';
import { StallingProxy } from '../../devices/stalling-proxy.js';

const id = { vendor: 0x1b36, device: 0x0011, classCode: 0xff0000 };
const TRIGGER_FD = IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER;
const GPA = 0x10_0000n;

let dev: PciDevice;
const fds: number[] = [];

/** Write the Command register as the guest does (a config-space write). */
function command(value: number): void {
  void dev.regionWrite(7, 0x04n, new Uint8Array([value & 0xff, value >> 8]));
}

function eventfdPair(): { ours: number; theirs: number } {
  const ours = native.eventfd();
  fds.push(ours);
  return { ours, theirs: native.dupFd(ours) };
}

beforeEach(() => {
  dev = new PciDevice({
    name: 'bme',
    id,
    bars: [{ index: 0, size: 0x1000 }],
    interrupts: { intx: true, msi: { vectors: 1 }, msix: { vectors: 2, bar: 2 } },
    express: { flr: true },
  });
});
afterEach(() => {
  dev.close();
  for (const fd of fds.splice(0)) native.closeFd(fd);
});

describe('bus mastering off (power-on, or the guest cleared it)', () => {
  it('refuses DMA with BusMasterDisabledError (ENODEV) and tells listeners when it changes', async () => {
    const seen: boolean[] = [];
    dev.dma.onBusMasterChange((on) => seen.push(on));
    const mem = new Uint8Array(0x1000);
    await dev.dmaMap({ addr: GPA, size: 0x1000n, offset: 0n, flags: 3 });
    expect(dev.busMasterEnabled).toBe(false);
    const refused = dev.dma.read(GPA, 16);
    await expect(refused).rejects.toBeInstanceOf(BusMasterDisabledError);
    await expect(refused).rejects.toMatchObject({ errno: Errno.ENODEV });
    await expect(dev.dma.write(GPA, mem.subarray(0, 4))).rejects.toBeInstanceOf(BusMasterDisabledError);
    expect(() => dev.dma.view(GPA, 16)).toThrow(BusMasterDisabledError);
    expect(dev.dma.pin([{ addr: GPA, length: 16 }])).toBeUndefined();
    command(0x0006);
    command(0x0002);
    expect(seen).toEqual([true, false]);
  });

  it('drops MSI-X and MSI (memory writes), but not INTx', () => {
    const msix = eventfdPair();
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.MSIX, start: 0, count: 1 }, [msix.theirs]);
    expect(dev.irq.trigger(0)).toBe(false);
    expect(native.eventfdRead(msix.ours)).toBe(0);
    expect(dev.irq.isPending(PciIrq.MSIX, 0)).toBe(false); // lost, not pending (QEMU's behaviour)
    command(0x0006);
    expect(dev.irq.trigger(0)).toBe(true);
    expect(native.eventfdRead(msix.ours)).toBe(1);
    dev.setIrqs(
      { flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, index: PciIrq.MSIX, start: 0, count: 0 },
      [],
    );
    const intx = eventfdPair();
    command(0x0002); // bus mastering off again
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.INTX, start: 0, count: 1 }, [intx.theirs]);
    expect(dev.irq.trigger(0)).toBe(true);
    expect(native.eventfdRead(intx.ours)).toBe(1);
  });

  it('comes back off after DEVICE_RESET and FLR (config space is reset)', async () => {
    command(0x0006);
    await dev.reset('client');
    expect([dev.busMasterEnabled, dev.dma.busMaster, dev.irq.busMaster]).toEqual([false, false, false]);
    command(0x0006);
    const express = dev.capabilities.express!;
    await dev.regionWrite(7, BigInt(express + 8), new Uint8Array([0, 0x80])); // Initiate FLR
    await dev.regionRead(7, 0n, 4); // waits for the FLR
    expect(dev.dma.busMaster).toBe(false);
  });
});

describe('bus mastering cleared while the device waits for a DMA message', () => {
  let server: DeviceServer;
  let proxy: StallingProxy;
  let client: VfioUserClient;
  const sock = tempSocketPath('bme');

  afterEach(async () => {
    client.close();
    proxy.close();
    await server.close();
    sock.remove();
  });

  it('cuts the transfer off at once with BusMasterDisabledError', async () => {
    server = await serve(dev, { socketPath: sock.path });
    proxy = await StallingProxy.open(sock.path);
    client = await VfioUserClient.connect(proxy.path);
    await client.dmaMap({ addr: GPA, backing: new Uint8Array(0x1000) }); // fd-less: DMA by message
    await client.cfgWrite16(0x04, 0x0006);
    proxy.stallDma = true; // the client does not answer (as QEMU while a vCPU waits for us)
    const read = dev.dma.read(GPA, 64);
    const outcome = read.then(
      () => 'answered',
      (err: unknown) => err,
    );
    while (proxy.heldRequests === 0) await new Promise((r) => setTimeout(r, 1));
    const t0 = Date.now();
    await client.cfgWrite16(0x04, 0x0002);
    expect(await outcome).toBeInstanceOf(BusMasterDisabledError);
    expect(Date.now() - t0).toBeLessThan(500);
  });
});

describe('bus mastering after a state is loaded', () => {
  it('follows the restored Command register: on where the state had it on, off where it had it off', async () => {
    const seen: boolean[] = [];
    dev.dma.onBusMasterChange((on) => seen.push(on));
    const other = new PciDevice({
      name: 'bme-source',
      id,
      bars: [{ index: 0, size: 0x1000 }],
      interrupts: { intx: true, msi: { vectors: 1 }, msix: { vectors: 2, bar: 2 } },
      express: { flr: true },
    });
    try {
      // The source's driver turned bus mastering on; the destination (dev) starts with it off.
      await other.regionWrite(7, 0x04n, new Uint8Array([0x06, 0]));
      expect(other.busMasterEnabled).toBe(true);
      await other.quiesce();
      const mastering = await other.saveState();
      expect(dev.dma.busMaster).toBe(false);
      await dev.quiesce();
      await dev.loadState(mastering);
      await dev.resume();
      expect(dev.busMasterEnabled).toBe(true);
      expect(dev.dma.busMaster).toBe(true);
      expect(seen).toEqual([true]);
      await dev.dmaMap({ addr: GPA, size: 0x1000n, offset: 0n, flags: 3 });
      // DMA is allowed again: the access gets as far as the (absent) client, not the bus-master gate.
      await expect(dev.dma.read(GPA, 16)).rejects.not.toBeInstanceOf(BusMasterDisabledError);

      // And a state saved with it off takes it away.
      await other.resume();
      await other.regionWrite(7, 0x04n, new Uint8Array([0x02, 0]));
      await other.quiesce();
      const off = await other.saveState();
      await dev.quiesce();
      await dev.loadState(off);
      await dev.resume();
      expect(dev.dma.busMaster).toBe(false);
      expect(seen).toEqual([true, false]);
      await expect(dev.dma.read(GPA, 16)).rejects.toBeInstanceOf(BusMasterDisabledError);
    } finally {
      other.close();
    }
  });
});
