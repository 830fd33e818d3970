/**
 * BAR accesses through the Endpoint: handler dispatch and access splitting,
 * async handlers, memory-backed areas in a real memfd, MSI-X table and PBA.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../../native/index.js';
import { PciDevice } from '../../../server/pci/index.js';
import { IrqSetFlag, PciIrq, RegionFlag } from '../../../protocol/constants.js';
import { listOpenFds } from '../../helpers/fds.js';
import { leBytes, leValue } from './helpers.js';

const id = { vendor: 0x1b36, device: 0x0010, classCode: 0xff0000 };
const devices: PciDevice[] = [];
afterEach(() => {
  for (const d of devices.splice(0)) d.close();
});

describe('register BARs', () => {
  it('splits 8-byte and unaligned accesses into aligned pieces, low first', async () => {
    const log: string[] = [];
    const dev = new PciDevice({
      name: 'split',
      id,
      bars: [
        {
          index: 0,
          size: 0x100,
          read: (offset, size) => {
            log.push(`r${size}@${offset}`);
            return 0x11223344 >>> (8 * (4 - size));
          },
          write: (offset, size, value) => void log.push(`w${size}@${offset}=${value.toString(16)}`),
        },
      ],
    });
    devices.push(dev);
    await dev.regionWrite(0, 8n, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
    await dev.regionRead(0, 0x10n, 8);
    await dev.regionRead(0, 0x21n, 4);
    await dev.regionWrite(0, 0x2n, new Uint8Array([0xaa, 0xbb]));
    expect(log).toEqual(['w4@8=4030201', 'w4@12=8070605', 'r4@16', 'r4@20', 'r1@33', 'r2@34', 'r1@36', 'w2@2=bbaa']);
  });

  it('uses read64/write64 when the BAR opts in, and awaits async handlers in order', async () => {
    let reg = 0n;
    const order: number[] = [];
    const dev = new PciDevice({
      name: 'wide',
      id,
      bars: [
        {
          index: 2,
          size: 0x1000,
          type: 'mem64',
          read64: async (offset) => (offset === 0 ? reg : 0n),
          write64: (_offset, value) => {
            reg = value;
          },
          read: async (offset) => {
            await new Promise((r) => setTimeout(r, offset === 0x100 ? 10 : 0));
            order.push(offset);
            return offset;
          },
        },
      ],
    });
    devices.push(dev);
    await dev.regionWrite(2, 0n, leBytes(0x1_2345_6789, 8));
    expect(reg).toBe(0x1_2345_6789n);
    expect(leValue(await dev.regionRead(2, 0n, 8))).toBe(0x1_2345_6789);
    const v = await dev.regionRead(2, 0x100n, 12); // 8 (wide) then 4: handler read64 returns 0 for 0x100, read for 0x108
    expect(leValue(v.subarray(8))).toBe(0x108);
    await Promise.all([dev.regionRead(2, 0x100n, 4), dev.regionRead(2, 0x104n, 4)]);
    expect(order).toContain(0x100);
  });

  it('answers 0 and ignores writes where the BAR has no handler', async () => {
    const dev = new PciDevice({ name: 'empty', id, bars: [{ index: 1, size: 0x20, type: 'io' }] });
    devices.push(dev);
    await dev.regionWrite(1, 0n, new Uint8Array([1, 2, 3, 4]));
    expect([...(await dev.regionRead(1, 0n, 4))]).toEqual([0, 0, 0, 0]);
    expect(dev.regionInfo(1)).toEqual({ flags: RegionFlag.READ | RegionFlag.WRITE, size: 0x20n, offset: 0n });
  });

  it('propagates handler errors', async () => {
    const dev = new PciDevice({
      name: 'err',
      id,
      bars: [
        {
          index: 0,
          size: 0x10,
          read: () => {
            throw new Error('boom');
          },
        },
      ],
    });
    devices.push(dev);
    expect(() => dev.regionRead(0, 0n, 4)).toThrow('boom');
  });
});

describe('memory-backed BARs', () => {
  it('shares a memfd with the client: sparse areas, same bytes, trapped registers elsewhere', async () => {
    const before = listOpenFds();
    const regs = new Uint32Array(4);
    const dev = new PciDevice({
      name: 'mem',
      id,
      bars: [
        {
          index: 2,
          size: 0x4000,
          prefetchable: true,
          memory: [{ offset: 0x1000, size: 0x2000 }],
          read: (o) => regs[(o >> 2) & 3]!,
          write: (o, _s, v) => {
            regs[(o >> 2) & 3] = v;
          },
        },
      ],
    });
    const info = dev.regionInfo(2);
    expect(info.flags).toBe(RegionFlag.READ | RegionFlag.WRITE | RegionFlag.MMAP);
    expect(info.sparseAreas).toEqual([{ offset: 0x1000n, size: 0x2000n }]);
    expect(info.fd).toBeTypeOf('number');
    // The client maps the fd: both sides see the same bytes.
    const clientMap = native.mmapFd(info.fd!, 0x1000, 0x2000, native.PROT_READ | native.PROT_WRITE);
    const client = new Uint8Array(clientMap.buffers[0]!);
    client[5] = 0x42;
    expect(dev.barMemory(2)[0x1005]).toBe(0x42);
    dev.barMemory(2)[0x1fff + 0x1000] = 7;
    expect(client[0x1fff]).toBe(7);
    // REGION_READ/WRITE of the memory area go to the same bytes; outside it, to the handlers.
    await dev.regionWrite(2, 0x1010n, new Uint8Array([9, 8]));
    expect([client[0x10], client[0x11]]).toEqual([9, 8]);
    await dev.regionWrite(2, 0x4n, leBytes(0xcafe, 4));
    expect(regs[1]).toBe(0xcafe);
    // A read across the boundary: registers then memory.
    const across = await dev.regionRead(2, 0xffcn, 8);
    expect(leValue(across.subarray(0, 4))).toBe(regs[3]);
    expect([...across.subarray(4)]).toEqual([0, 0, 0, 0]);
    clientMap.unmap();
    dev.close();
    expect(listOpenFds()).toEqual(before);
  });

  it('keeps the MSI-X table and PBA pages out of a whole-BAR memory mapping', () => {
    const dev = new PciDevice({
      name: 'mem-msix',
      id,
      bars: [{ index: 0, size: 0x4000, memory: true }],
      interrupts: { msix: { vectors: 4, bar: 0, tableOffset: 0x2000, pbaOffset: 0x3000 } },
    });
    devices.push(dev);
    expect(dev.regionInfo(0).sparseAreas).toEqual([{ offset: 0n, size: 0x2000n }]);
    expect(
      () =>
        new PciDevice({
          name: 'bad',
          id,
          bars: [{ index: 0, size: 0x4000, memory: [{ offset: 0x2000, size: 0x1000 }] }],
          interrupts: { msix: { vectors: 4, bar: 0, tableOffset: 0x2000 } },
        }),
    ).toThrow(/MSI-X/);
  });
});

describe('MSI-X table and PBA', () => {
  it('emulates the table (mask bit only in vector control) and serves PBA from pending bits', async () => {
    const dev = new PciDevice({ name: 'msix', id, interrupts: { msix: { vectors: 70, bar: 4 } } });
    devices.push(dev);
    const l = dev.msixLayout!;
    expect(l).toMatchObject({ tableBar: 4, tableOffset: 0, pbaBar: 4 });
    // Vector control defaults to masked.
    expect(leValue(await dev.regionRead(4, BigInt(l.tableOffset + 16 * 3 + 12), 4))).toBe(1);
    await dev.regionWrite(4, BigInt(l.tableOffset + 16 * 3), leBytes(0xfee00000, 4));
    await dev.regionWrite(4, BigInt(l.tableOffset + 16 * 3 + 12), leBytes(0xffffffff, 4));
    expect(leValue(await dev.regionRead(4, BigInt(l.tableOffset + 16 * 3), 4))).toBe(0xfee00000);
    expect(leValue(await dev.regionRead(4, BigInt(l.tableOffset + 16 * 3 + 12), 4))).toBe(1);
    // Enable MSI-X with no vectors (QEMU's first step): triggers pend (bus mastering on: MSI-X is a memory write).
    await dev.regionWrite(7, 0x04n, leBytes(0x0006, 2));
    dev.setIrqs(
      { flags: IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, index: PciIrq.MSIX, start: 0, count: 1 },
      [],
    );
    expect(dev.irq.mode).toBe('msix');
    expect(dev.irq.trigger(65)).toBe(false);
    expect(dev.irq.trigger(1)).toBe(false);
    const pba = await dev.regionRead(4, BigInt(l.pbaOffset), 16);
    expect(leValue(pba.subarray(0, 4))).toBe(2);
    expect(pba[8]).toBe(2);
    // PBA writes are ignored.
    await dev.regionWrite(4, BigInt(l.pbaOffset), new Uint8Array(8));
    expect((await dev.regionRead(4, BigInt(l.pbaOffset), 1))[0]).toBe(2);
  });
});
