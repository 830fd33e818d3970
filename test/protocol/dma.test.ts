/**
 * DMA_MAP (2) and DMA_UNMAP (3): the codec, the happy path on both device
 * models, validation with libvfio-user's errno (handle_dma_map /
 * is_valid_unmap), and DMA_UNMAP while the device is using the range.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import * as P from '../../protocol/index.js';
import { VfioUserCommand, DmaMapFlag, DmaUnmapFlag, Errno, PciIrq, PciRegion } from '../../protocol/constants.js';
import { connectedEachTest, deviceEachTest } from '../helpers/per-test.js';
import {
  DEVICE_KINDS,
  expectAlive,
  expectErrorReply,
  rawRequest,
  fields,
  expectErrno,
  type RunningDevice,
} from '../helpers/harness.js';
import { PciTestDevice } from '../helpers/pci-test-device.js';
import { Reg } from '../helpers/test-device.js';
import type { VfioUserClient } from '../../client/index.js';

describe('codec', () => {
  it('DMA_MAP / DMA_UNMAP round-trip', () => {
    const map = { flags: 3, offset: 0x1000n, addr: 0xfee00000n, size: 0x200000n };
    expect(P.decodeDmaMapRequest(P.encodeDmaMapRequest(1, map))).toEqual({ argsz: 32, ...map });
    const un = { flags: 0, addr: 5n << 32n, size: 4096n };
    expect(P.decodeDmaUnmapRequest(P.encodeDmaUnmapRequest(2, un))).toEqual({ argsz: 24, ...un });
    expect(P.decodeDmaUnmapReply(P.encodeDmaUnmapReply(2, { argsz: 24, ...un }))).toEqual({ argsz: 24, ...un });
    expect(P.encodeDmaMapReply(1).byteLength).toBe(16);
  });

  it('every field at its spec offset', () => {
    const u32 = (m: Uint8Array, o: number) => new DataView(m.buffer, m.byteOffset).getUint32(o, true);
    const u64 = (m: Uint8Array, o: number) => new DataView(m.buffer, m.byteOffset).getBigUint64(o, true);
    const map = P.encodeDmaMapRequest(1, { flags: 3, offset: 0x1000n, addr: 0xfee00000n, size: 0x200000n });
    expect([u32(map, 16), u32(map, 20), u64(map, 24), u64(map, 32), u64(map, 40)]).toEqual([
      32,
      3,
      0x1000n,
      0xfee00000n,
      0x200000n,
    ]);
    const unmap = P.encodeDmaUnmapReply(1, {
      argsz: 48,
      flags: 2,
      addr: 0x2000n,
      size: 0x1000n,
      bitmap: { pgsize: 4096n, size: 8n, data: new Uint8Array(8).fill(0xaa) },
    });
    expect([u32(unmap, 16), u32(unmap, 20), u64(unmap, 24), u64(unmap, 32), u64(unmap, 40), u64(unmap, 48)]).toEqual([
      48,
      2,
      0x2000n,
      0x1000n,
      4096n,
      8n,
    ]);
    expect(unmap[56]).toBe(0xaa);
  });
});

let run: RunningDevice;
let c: VfioUserClient;

const RW = DmaMapFlag.READ | DmaMapFlag.WRITE;
const map = (argsz: number, flags: number, offset: bigint, addr: bigint, size: bigint) =>
  fields(['u32', argsz], ['u32', flags], ['u64', offset], ['u64', addr], ['u64', size]);
const unmap = (argsz: number, flags: number, addr: bigint, size: bigint) =>
  fields(['u32', argsz], ['u32', flags], ['u64', addr], ['u64', size]);

describe.each(DEVICE_KINDS)('%s', (_kind, make) => {
  connectedEachTest((client, started) => {
    c = client;
    run = started;
  }, make);

  it('DMA_MAP / DMA_UNMAP with and without an fd, and UNMAP ALL', async () => {
    const mem = c.createGuestMemory(0x4000);
    const shared = await c.dmaMap({ addr: 0x10000n, backing: mem });
    expect(shared.shared).toBe(true);
    await c.dmaMap({ addr: 0x20000n, size: 0x1000n });
    expect(run.device.dmaRanges()).toEqual([
      { addr: 0x10000n, size: 0x4000n, mapped: true },
      { addr: 0x20000n, size: 0x1000n, mapped: false },
    ]);
    const echo = await c.dmaUnmap(0x10000n, 0x4000n);
    expect(echo).toMatchObject({ addr: 0x10000n, size: 0x4000n, flags: 0 });
    await c.dmaUnmapAll();
    expect(run.device.dmaRanges()).toEqual([]);
  });

  describe('DMA_MAP: bad input', () => {
    const cases: Array<[string, Uint8Array, number]> = [
      ['payload 24 bytes', fields(['u32', 32], ['u32', RW], ['u64', 0], ['u64', 0x1000]), Errno.EINVAL],
      ['argsz 31', map(31, RW, 0n, 0x1000n, 0x1000n), Errno.EINVAL],
      ['unknown flag bits', map(32, RW | 0x100, 0n, 0x1000n, 0x1000n), Errno.EINVAL],
      ['MMAP flag without an fd', map(32, RW | DmaMapFlag.MMAP, 0n, 0x1000n, 0x1000n), Errno.EINVAL],
      ['FILE_IO flag without an fd', map(32, RW | DmaMapFlag.FILE_IO, 0n, 0x1000n, 0x1000n), Errno.EINVAL],
      ['addr + size overflowing u64', map(32, RW, 0n, 0xfffffffffffff000n, 0x2000n), Errno.EINVAL],
    ];
    for (const [what, payload, errno] of cases) {
      it(`${what} -> ${errno}, alive`, async () => {
        expectErrorReply(await rawRequest(c, { command: VfioUserCommand.DMA_MAP }, payload), errno);
        await expectAlive(c);
      });
    }

    it('a huge size (> 8 TiB): refused (ENOSPC in libvfio-user; EINVAL accepted), alive', async () => {
      const r = await rawRequest(c, { command: VfioUserCommand.DMA_MAP }, map(32, RW, 0n, 0n, 1n << 50n));
      expect([Errno.ENOSPC, Errno.EINVAL]).toContain(r.header.error);
      await expectAlive(c);
    });

    it('overlapping an existing map -> EINVAL (libvfio-user), alive', async () => {
      await c.dmaMap({ addr: 0x10000n, size: 0x2000n });
      expectErrorReply(
        await rawRequest(c, { command: VfioUserCommand.DMA_MAP }, map(32, RW, 0n, 0x11000n, 0x2000n)),
        Errno.EINVAL,
      );
      expectErrorReply(
        await rawRequest(c, { command: VfioUserCommand.DMA_MAP }, map(32, RW, 0n, 0xf000n, 0x2000n)),
        Errno.EINVAL,
      );
      await expectAlive(c);
    });

    it('an identical re-map succeeds (libvfio-user); the same range with other flags is EINVAL', async () => {
      await c.dmaMap({ addr: 0x30000n, size: 0x1000n });
      const again = await rawRequest(c, { command: VfioUserCommand.DMA_MAP }, map(32, RW, 0n, 0x30000n, 0x1000n));
      expect(again.header.flags & 0x20).toBe(0);
      expectErrorReply(
        await rawRequest(c, { command: VfioUserCommand.DMA_MAP }, map(32, DmaMapFlag.READ, 0n, 0x30000n, 0x1000n)),
        Errno.EINVAL,
      );
      expect(run.device.dmaRanges().length).toBe(1);
      await expectAlive(c);
    });

    it('an fd that cannot be mapped (a socket) is refused and closed', async () => {
      const [a, b] = native.socketpair();
      const r = await rawRequest(c, { command: VfioUserCommand.DMA_MAP }, map(32, RW, 0n, 0x40000n, 0x1000n), [a]);
      native.closeFd(a);
      native.closeFd(b);
      expect(r.header.flags & 0x20).toBe(0x20);
      await expectAlive(c);
    });

    it('a map beyond the memfd size is refused or faults in the device, never crashes the server', async () => {
      const memfd = native.memfdCreate('small', 0x1000);
      const r = await rawRequest(c, { command: VfioUserCommand.DMA_MAP }, map(32, RW, 0x100000n, 0x50000n, 0x1000n), [
        memfd,
      ]);
      native.closeFd(memfd);
      expect(r.header.command).toBe(VfioUserCommand.DMA_MAP);
      await expectAlive(c);
    });

    it('two fds on one DMA_MAP: EINVAL, both closed', async () => {
      const m1 = native.memfdCreate('m1', 0x1000);
      const m2 = native.memfdCreate('m2', 0x1000);
      const r = await rawRequest(c, { command: VfioUserCommand.DMA_MAP }, map(32, RW, 0n, 0x60000n, 0x1000n), [m1, m2]);
      native.closeFd(m1);
      native.closeFd(m2);
      expectErrorReply(r, Errno.EINVAL);
      await expectAlive(c);
    });
  });

  describe('DMA_UNMAP: bad input', () => {
    const cases: Array<[string, Uint8Array, number]> = [
      ['payload 16 bytes', fields(['u32', 24], ['u32', 0], ['u64', 0x1000]), Errno.EINVAL],
      ['argsz 23', unmap(23, 0, 0x10000n, 0x1000n), Errno.EINVAL],
      ['argsz > 1 MiB', unmap(0x100001, 0, 0x10000n, 0x1000n), Errno.EINVAL],
      ['unknown flags', unmap(24, 0x8, 0x10000n, 0x1000n), Errno.EINVAL],
      ['ALL with an address', unmap(24, DmaUnmapFlag.ALL, 0x10000n, 0n), Errno.EINVAL],
      ['ALL with a size', unmap(24, DmaUnmapFlag.ALL, 0n, 0x1000n), Errno.EINVAL],
      ['ALL with GET_DIRTY_BITMAP', unmap(24, DmaUnmapFlag.ALL | DmaUnmapFlag.GET_DIRTY_BITMAP, 0n, 0n), Errno.EINVAL],
      ['an unknown range', unmap(24, 0, 0x70000n, 0x1000n), Errno.ENOENT],
    ];
    for (const [what, payload, errno] of cases) {
      it(`${what} -> ${errno}, alive`, async () => {
        expectErrorReply(await rawRequest(c, { command: VfioUserCommand.DMA_UNMAP }, payload), errno);
        await expectAlive(c);
      });
    }

    it('part of a mapped range -> ENOENT (exact match required)', async () => {
      await c.dmaMap({ addr: 0x10000n, size: 0x2000n });
      await expectErrno(c.dmaUnmap(0x10000n, 0x1000n), Errno.ENOENT);
      await expectErrno(c.dmaUnmap(0x11000n, 0x1000n), Errno.ENOENT);
      await c.dmaUnmap(0x10000n, 0x2000n);
    });

    it('GET_DIRTY_BITMAP without dirty tracking: refused, alive', async () => {
      await c.dmaMap({ addr: 0x10000n, size: 0x1000n });
      const p = fields(
        ['u32', 24 + 16 + 8],
        ['u32', DmaUnmapFlag.GET_DIRTY_BITMAP],
        ['u64', 0x10000],
        ['u64', 0x1000],
        ['u64', 4096],
        ['u64', 8],
      );
      const r = await rawRequest(c, { command: VfioUserCommand.DMA_UNMAP }, p);
      expect(r.header.flags & 0x20).toBe(0x20);
      await expectAlive(c);
    });
  });
});

/**
 * DMA_UNMAP while the device is using the range (checklist 42: drop every
 * reference before replying). PciDevice's DmaSpace makes the unmap of an
 * fd-backed range wait for the device's hold; the device's copy completes
 * first, and afterwards the memory is gone from the device.
 */
describe('DMA_UNMAP during device DMA', () => {
  let pci: RunningDevice<PciTestDevice>;
  deviceEachTest(
    (started) => {
      pci = started;
    },
    () => new PciTestDevice(),
  );

  it('waits for the held job, which completes; later jobs on the range fail with EFAULT', async () => {
    const c = await pci.connect();
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
    expect(pci.device.dmaRanges()).toEqual([]);
  });
});
