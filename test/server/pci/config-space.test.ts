/**
 * The device model's config space, driven through the Endpoint interface the
 * connection uses (REGION_READ/WRITE on region 7): header, BAR and ROM sizing,
 * read-only and RW1C bits, the capability chains, FLR.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  PciDevice,
  walkCapabilities,
  walkExtendedCapabilities,
  CapId,
  ExtCapId,
  ExpressReg,
} from '../../../server/pci/index.js';
import type { ResetReason } from '../../../server/endpoint.js';
import { PciRegion, RegionFlag } from '../../../protocol/constants.js';
import { cfgRead, cfgWrite } from './helpers.js';

const devices: PciDevice[] = [];
function make(options: ConstructorParameters<typeof PciDevice>[0]): PciDevice {
  const dev = new PciDevice(options);
  devices.push(dev);
  return dev;
}
afterEach(() => {
  for (const d of devices.splice(0)) d.close();
});

const id = {
  vendor: 0x1b36,
  device: 0x0005,
  classCode: 0x058000,
  revision: 3,
  subsystemVendor: 0x1af4,
  subsystem: 0x1100,
};

describe('type-0 header', () => {
  it('reports ids, class, revision, subsystem and interrupt pin', async () => {
    const dev = make({ name: 'hdr', id, interrupts: { intx: 'B' } });
    expect(await cfgRead(dev, 0x00, 2)).toBe(0x1b36);
    expect(await cfgRead(dev, 0x02, 2)).toBe(0x0005);
    expect(await cfgRead(dev, 0x08, 4)).toBe((0x058000 << 8) | 3);
    expect(await cfgRead(dev, 0x0e, 1)).toBe(0);
    expect(await cfgRead(dev, 0x2c, 4)).toBe(0x1100_1af4);
    expect(await cfgRead(dev, 0x3d, 1)).toBe(2);
    expect(dev.regionInfo(PciRegion.CONFIG)).toMatchObject({ size: 256n, flags: RegionFlag.READ | RegionFlag.WRITE });
    expect(dev.numRegions).toBe(9);
    expect(dev.numIrqs).toBe(5);
  });

  it('ignores writes to read-only fields', async () => {
    const dev = make({ name: 'ro', id });
    await cfgWrite(dev, 0x00, 4, 0xdeadbeef);
    await cfgWrite(dev, 0x08, 4, 0xffffffff);
    await cfgWrite(dev, 0x3d, 1, 4);
    expect(await cfgRead(dev, 0x00, 4)).toBe(0x0005_1b36);
    expect(await cfgRead(dev, 0x08, 4)).toBe((0x058000 << 8) | 3);
    expect(await cfgRead(dev, 0x3d, 1)).toBe(0);
    await cfgWrite(dev, 0x3c, 1, 11);
    expect(await cfgRead(dev, 0x3c, 1)).toBe(11);
  });

  it('honours writable COMMAND bits only and RW1C STATUS bits', async () => {
    const dev = make({ name: 'cmd', id, bars: [{ index: 0, size: 0x1000 }] });
    await cfgWrite(dev, 0x04, 2, 0xffff);
    // MEMORY, MASTER, PARITY, SERR, INTX_DISABLE; no IO (no I/O BAR).
    expect(await cfgRead(dev, 0x04, 2)).toBe(0x2 | 0x4 | 0x40 | 0x100 | 0x400);
    expect(dev.busMasterEnabled).toBe(true);
    // Status: RW1C bits cannot be set by software; simulate the device setting one.
    await cfgWrite(dev, 0x06, 2, 0xffff);
    expect(await cfgRead(dev, 0x06, 2)).toBe(0);
    dev.config.setU16(0x06, 0x2000 | 0x8000);
    await cfgWrite(dev, 0x06, 2, 0x2000);
    expect(await cfgRead(dev, 0x06, 2)).toBe(0x8000);
  });
});

describe('BAR sizing', () => {
  it('sizes 32-bit, prefetchable 64-bit and I/O BARs by writing all-ones', async () => {
    const dev = make({
      name: 'bars',
      id,
      bars: [
        { index: 0, size: 0x1000 },
        { index: 2, size: 0x1_0000_0000 * 2, type: 'mem64', prefetchable: true },
        { index: 4, size: 0x20, type: 'io' },
      ],
    });
    const sized: number[] = [];
    for (let bar = 0; bar < 6; bar++) {
      await cfgWrite(dev, 0x10 + 4 * bar, 4, 0xffffffff);
      sized.push(await cfgRead(dev, 0x10 + 4 * bar, 4));
    }
    expect(sized[0]).toBe(0xfffff000);
    expect(sized[1]).toBe(0);
    expect(sized[2]).toBe(0x0000000c); // 8 GiB: low dword has only the type bits
    expect(sized[3]).toBe(0xfffffffe); // upper dword: ~(2 - 1)
    expect(sized[4]).toBe(0xffffffe1);
    expect(sized[5]).toBe(0);
    expect(dev.regionInfo(2).size).toBe(0x2_0000_0000n);
    expect(dev.regionInfo(3).size).toBe(0n);
    expect(dev.regionInfo(1)).toMatchObject({ size: 0n, flags: 0 });
    // An address is kept, masked to the size; type bits stay.
    await cfgWrite(dev, 0x10, 4, 0xfebf1234);
    expect(await cfgRead(dev, 0x10, 4)).toBe(0xfebf1000);
  });

  it('rejects sizes QEMU cannot take', () => {
    expect(() => new PciDevice({ name: 'x', id, bars: [{ index: 0, size: 0x3000 }] })).toThrow(/power of two/);
    expect(() => new PciDevice({ name: 'x', id, bars: [{ index: 5, size: 0x1000, type: 'mem64' }] })).toThrow(/slot 5/);
    expect(
      () =>
        new PciDevice({
          name: 'x',
          id,
          bars: [
            { index: 0, size: 0x1000, type: 'mem64' },
            { index: 1, size: 16 },
          ],
        }),
    ).toThrow();
  });

  it('sizes the expansion ROM and serves its contents', async () => {
    const rom = new Uint8Array(3000).fill(0xaa);
    rom[0] = 0x55;
    const dev = make({ name: 'rom', id, rom });
    await cfgWrite(dev, 0x30, 4, 0xfffff800);
    expect(await cfgRead(dev, 0x30, 4)).toBe(0xfffff000); // 4 KiB
    await cfgWrite(dev, 0x30, 4, 0xffffffff);
    expect(await cfgRead(dev, 0x30, 4)).toBe(0xfffff001);
    expect(dev.regionInfo(PciRegion.ROM)).toMatchObject({ size: 4096n, flags: RegionFlag.READ });
    const head = await dev.regionRead(PciRegion.ROM, 0n, 2);
    expect([...head]).toEqual([0x55, 0xaa]);
    const noRom = make({ name: 'norom', id });
    await cfgWrite(noRom, 0x30, 4, 0xfffff800);
    expect(await cfgRead(noRom, 0x30, 4)).toBe(0);
    expect(noRom.regionInfo(PciRegion.ROM).size).toBe(0n);
  });
});

describe('capabilities', () => {
  it('chains PM, MSI, MSI-X, PCIe and vendor caps, and DSN + vendor extended caps', async () => {
    const dev = make({
      name: 'caps',
      id,
      bars: [{ index: 0, size: 0x4000 }],
      interrupts: { intx: true, msi: { vectors: 4 }, msix: { vectors: 8, bar: 0 } },
      capabilities: [
        { kind: 'pm' },
        { kind: 'vendor', data: new Uint8Array([1, 2, 3, 4, 5]) },
        { kind: 'dsn', serial: 0x0123_4567_89ab_cdefn },
        { kind: 'vendor-ext', id: 0x42, revision: 1, data: new Uint8Array(8) },
      ],
      express: true,
    });
    expect(dev.regionInfo(PciRegion.CONFIG).size).toBe(4096n);
    const cfg = await dev.regionRead(PciRegion.CONFIG, 0n, 4096);
    const view = new DataView(cfg.buffer, cfg.byteOffset);
    expect(view.getUint16(0x06, true) & 0x10).toBe(0x10);
    const chain = walkCapabilities((o) => cfg[o]!);
    expect(chain.map((c) => c.id)).toEqual([CapId.PM, CapId.MSI, CapId.MSIX, CapId.EXPRESS, CapId.VENDOR]);
    const ext = walkExtendedCapabilities((o) => view.getUint32(o, true));
    expect(ext.map((c) => c.id)).toEqual([ExtCapId.DSN, ExtCapId.VENDOR]);
    expect(view.getUint32(ext[0]!.offset + 4, true)).toBe(0x89abcdef);
    expect(view.getUint32(ext[0]!.offset + 8, true)).toBe(0x01234567);

    // MSI: 4 vectors (MMC=2), 64-bit, per-vector mask.
    const msi = dev.capabilities.msi!;
    expect(view.getUint16(msi + 2, true)).toBe((2 << 1) | 0x80 | 0x100);
    // MSI-X: 8 vectors, table in BAR0 at the upper half, PBA after it.
    const msix = dev.capabilities.msix!;
    expect(view.getUint16(msix + 2, true)).toBe(7);
    expect(view.getUint32(msix + 4, true)).toBe(0x2000);
    expect(view.getUint32(msix + 8, true)).toBe(0x3000);
    // Vendor cap: length byte then data.
    const vnd = dev.capabilities.vendor[0]!;
    expect([...cfg.subarray(vnd + 2, vnd + 8)]).toEqual([8, 1, 2, 3, 4, 5]);
    // PCIe v2 endpoint with FLR.
    const px = dev.capabilities.express!;
    expect(view.getUint16(px + ExpressReg.CAPS, true)).toBe(0x2);
    expect(view.getUint32(px + ExpressReg.DEVCAP, true) & (1 << 28)).not.toBe(0);
  });

  it('keeps read-only capability bits and clamps MSI multiple message enable', async () => {
    const dev = make({
      name: 'msi',
      id,
      interrupts: { msi: { vectors: 2, address64: false, perVectorMask: false }, msix: { vectors: 3, bar: 2 } },
    });
    const msi = dev.capabilities.msi!;
    await cfgWrite(dev, msi + 2, 2, 0xffff);
    // enable + MME clamped to MMC (1); 64-bit / mask bits stay clear.
    expect(await cfgRead(dev, msi + 2, 2)).toBe(1 | (1 << 1) | (1 << 4));
    await cfgWrite(dev, msi + 4, 4, 0xfee00003);
    expect(await cfgRead(dev, msi + 4, 4)).toBe(0xfee00000);
    const msix = dev.capabilities.msix!;
    await cfgWrite(dev, msix, 4, 0xffffffff);
    expect(await cfgRead(dev, msix, 4)).toBe(((0xc002 << 16) | 0x11) >>> 0);
    await cfgWrite(dev, msix + 4, 4, 0);
    expect(await cfgRead(dev, msix + 4, 4)).toBe(2); // dedicated BAR 2, table at 0
    expect(dev.regionInfo(2).size).toBe(4096n);
  });

  it('vendor capability: writable bytes and a write callback', async () => {
    const seen: number[][] = [];
    const dev = make({
      name: 'vnd',
      id,
      capabilities: [
        {
          kind: 'vendor',
          data: new Uint8Array([0xaa, 0, 0]),
          writable: new Uint8Array([0, 0xff, 0x0f]),
          onWrite: (b) => void seen.push([...b]),
        },
      ],
    });
    const at = dev.capabilities.vendor[0]!;
    await cfgWrite(dev, at + 3, 4, 0xffffffff);
    expect(seen).toEqual([[0xaa, 0xff, 0x0f]]);
    expect(await cfgRead(dev, at + 2, 4)).toBe(0x0fffaa06);
  });

  it('PM ignores D1/D2 and accepts D3hot/D0', async () => {
    const dev = make({ name: 'pm', id, capabilities: [{ kind: 'pm' }] });
    const pm = dev.capabilities.pm!;
    await cfgWrite(dev, pm + 4, 2, 3);
    expect((await cfgRead(dev, pm + 4, 2)) & 3).toBe(3);
    await cfgWrite(dev, pm + 4, 2, 1);
    expect((await cfgRead(dev, pm + 4, 2)) & 3).toBe(3);
    await cfgWrite(dev, pm + 4, 2, 0);
    expect(await cfgRead(dev, pm + 4, 2)).toBe(0x8); // D0, No_Soft_Reset
  });
});

describe('reset', () => {
  it('FLR quiesces, resets config space to power-on and calls onReset("flr")', async () => {
    const events: string[] = [];
    const dev = make({
      name: 'flr',
      id,
      bars: [{ index: 0, size: 0x1000 }],
      express: { flr: true },
      quiesce: async () => {
        await new Promise((r) => setTimeout(r, 5));
        events.push('quiesce');
      },
      onReset: (reason: ResetReason) => {
        events.push(`reset:${reason}`);
      },
    });
    await cfgWrite(dev, 0x04, 2, 0x6);
    await cfgWrite(dev, 0x10, 4, 0xfebf0000);
    const px = dev.capabilities.express!;
    await cfgWrite(dev, px + ExpressReg.DEVCTL, 2, 0x8000 | 0x2810);
    // The next access waits for the reset to finish.
    expect(await cfgRead(dev, 0x04, 2)).toBe(0);
    expect(events).toEqual(['quiesce', 'reset:flr']);
    expect(await cfgRead(dev, 0x10, 4)).toBe(0);
    expect((await cfgRead(dev, px + ExpressReg.DEVCTL, 2)) & 0x8000).toBe(0);
  });

  it('a failing quiesce fails that reset only; accesses and later resets go on', async () => {
    let fail = true;
    const reasons: ResetReason[] = [];
    const dev = make({
      name: 'fail',
      id,
      express: true,
      quiesce: () => {
        if (fail) throw new Error('stuck');
      },
      onReset: (r) => void reasons.push(r),
    });
    // FLR with a failing quiesce: the write succeeds (as on hardware), the reset is logged as failed.
    await cfgWrite(dev, dev.capabilities.express! + ExpressReg.DEVCTL, 2, 0x8000);
    expect(await cfgRead(dev, 0x00, 2)).toBe(0x1b36);
    await expect(dev.reset('client')).rejects.toThrow('stuck');
    expect(await cfgRead(dev, 0x00, 2)).toBe(0x1b36);
    fail = false;
    await dev.reset('client');
    expect(reasons).toEqual(['client']);
  });

  it('DEVICE_RESET resets config; lost connection keeps it', async () => {
    const reasons: ResetReason[] = [];
    const dev = make({ name: 'rst', id, bars: [{ index: 0, size: 0x1000 }], onReset: (r) => void reasons.push(r) });
    await cfgWrite(dev, 0x04, 2, 0x2);
    await dev.detach();
    expect(await cfgRead(dev, 0x04, 2)).toBe(0x2);
    await dev.reset('client');
    expect(await cfgRead(dev, 0x04, 2)).toBe(0);
    expect(reasons).toEqual(['lost-connection', 'client']);
  });
});
