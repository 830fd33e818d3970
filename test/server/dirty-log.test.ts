/**
 * Dirty-page logging against the truth: the device writes guest memory every
 * way it can (dma.write to mapped memory, dma.write by DMA_WRITE messages,
 * writable pins, writable views, markDirty), the client compares its memory
 * with a copy taken before, and DMA_LOGGING_REPORT must name exactly the pages
 * that changed (a view's pages stay reported: the library cannot see writes
 * through it). Then: reports clear, a pin's release re-marks, listed ranges
 * narrow the log, other report page sizes fold or repeat bits.
 */
import { describe, expect, it } from 'vitest';
import { deviceEachTest } from '../helpers/per-test.js';
import { PciTestDevice } from '../helpers/pci-test-device.js';
import { mulberry32 } from '../helpers/random.js';
import type { GuestMemory, VfioUserClient } from '../../client/index.js';

const PAGE = 4096;
const MAPPED = 0x100000n; // fd-backed, 64 pages
const MESSAGES = 0x400000n; // no fd: DMA_WRITE messages, 16 pages
const MAPPED_PAGES = 64;
const MESSAGE_PAGES = 16;

/** Indexes of the pages where `after` differs from `before`. */
function changedPages(before: Uint8Array, after: Uint8Array): number[] {
  const pages: number[] = [];
  for (let p = 0; p * PAGE < after.byteLength; p++) {
    const a = before.subarray(p * PAGE, (p + 1) * PAGE);
    const b = after.subarray(p * PAGE, (p + 1) * PAGE);
    if (!a.every((x, i) => x === b[i])) pages.push(p);
  }
  return pages;
}

describe('dirty-page logging', () => {
  let c: VfioUserClient;
  let dev: PciTestDevice;
  let mem: GuestMemory;
  let bounce: Uint8Array;
  deviceEachTest(
    async (r) => {
      dev = r.device;
      c = await r.connect();
      mem = c.createGuestMemory(MAPPED_PAGES * PAGE);
      await c.dmaMap({ addr: MAPPED, backing: mem });
      bounce = (await c.dmaMap({ addr: MESSAGES, size: BigInt(MESSAGE_PAGES * PAGE) })).bytes;
    },
    () => new PciTestDevice('dirty', { migratable: true }),
  );

  it('the bitmap names exactly the pages the device wrote, whichever way it wrote them', async () => {
    await c.startDirtyLogging({ pageSize: BigInt(PAGE) });
    const before = mem.read(0, mem.size);
    const bounceBefore = bounce.slice();
    const next = mulberry32(0xd1b7);
    const somePages = (n: number, of: number): number[] => [...new Set(Array.from({ length: n }, () => next() % of))];
    const fill = (n: number): Uint8Array => new Uint8Array(n).fill(1 + (next() % 255));

    // dma.write to mapped memory: a few short writes, one crossing a page boundary.
    for (const p of somePages(6, MAPPED_PAGES - 1)) await dev.dma.write(MAPPED + BigInt(p * PAGE + 100), fill(64));
    await dev.dma.write(MAPPED + BigInt(40 * PAGE - 8), fill(16));
    // DMA_WRITE messages (no fd).
    for (const p of somePages(4, MESSAGE_PAGES)) await dev.dma.write(MESSAGES + BigInt(p * PAGE), fill(32));
    // Forced messages to mapped memory (what libvfio-user's sample server does for its first map).
    await dev.dma.write(MAPPED + BigInt(50 * PAGE), fill(8), { via: 'messages' });
    // A writable pin: written through its views, then released.
    const pin = dev.dma.pin([
      { addr: MAPPED + BigInt(55 * PAGE), length: 2 * PAGE },
      { addr: MAPPED + BigInt(60 * PAGE + 512), length: 16 },
    ])!;
    expect(pin).toBeDefined();
    pin.views[0]!.fill(7, PAGE, PAGE + 10); // only the second page of the first range
    pin.views[1]!.fill(9);
    pin.release();
    // A writable view kept by the device.
    const view = dev.dma.view(MAPPED + BigInt(62 * PAGE), 8);
    view.fill(3);
    // markDirty: written behind the space's back.
    mem.write(63 * PAGE, Uint8Array.of(5));
    dev.dma.markDirty(MAPPED + BigInt(63 * PAGE), 1);

    const written = changedPages(before, mem.read(0, mem.size));
    const writtenByMessage = changedPages(bounceBefore, bounce);
    // A pinned page that was not written counts too (the pin gave write access): page 55.
    const expected = [...new Set([...written, 55])].sort((a, b) => a - b);
    const mapped = await c.dirtyBitmap(MAPPED, BigInt(MAPPED_PAGES * PAGE));
    expect(mapped.dirtyPages()).toEqual(expected);
    const messages = await c.dirtyBitmap(MESSAGES, BigInt(MESSAGE_PAGES * PAGE));
    expect(messages.dirtyPages()).toEqual(writtenByMessage);
    expect(writtenByMessage.length).toBeGreaterThan(0);

    // Reported pages are cleared, except the view's: writes through it stay invisible, so it stays dirty.
    expect((await c.dirtyBitmap(MAPPED, BigInt(MAPPED_PAGES * PAGE))).dirtyPages()).toEqual([62]);
    expect((await c.dirtyBitmap(MESSAGES, BigInt(MESSAGE_PAGES * PAGE))).dirtyPages()).toEqual([]);
  });

  it('a pin held across a report marks its pages again when released', async () => {
    await c.startDirtyLogging();
    const pin = dev.dma.pin([{ addr: MAPPED + BigInt(3 * PAGE), length: PAGE }])!;
    expect((await c.dirtyBitmap(MAPPED, BigInt(MAPPED_PAGES * PAGE))).dirtyPages()).toEqual([3]);
    pin.views[0]!.fill(1); // the I/O completes after the report
    pin.release();
    expect((await c.dirtyBitmap(MAPPED, BigInt(MAPPED_PAGES * PAGE))).dirtyPages()).toEqual([3]);
    expect((await c.dirtyBitmap(MAPPED, BigInt(MAPPED_PAGES * PAGE))).dirtyPages()).toEqual([]);
  });

  it('nothing is logged before START or after STOP; read-only pins and views mark nothing', async () => {
    await dev.dma.write(MAPPED, Uint8Array.of(1));
    await c.startDirtyLogging();
    dev.dma.pin([{ addr: MAPPED + BigInt(PAGE), length: 8 }], 'read')!.release();
    dev.dma.view(MAPPED + BigInt(2 * PAGE), 8, 'read');
    expect((await c.dirtyBitmap(MAPPED, BigInt(MAPPED_PAGES * PAGE))).dirtyPages()).toEqual([]);
    await c.stopDirtyLogging();
    await dev.dma.write(MAPPED + BigInt(5 * PAGE), Uint8Array.of(1));
    await c.startDirtyLogging();
    expect((await c.dirtyBitmap(MAPPED, BigInt(MAPPED_PAGES * PAGE))).dirtyPages()).toEqual([]);
  });

  it('listed ranges: only writes inside them are logged', async () => {
    await c.startDirtyLogging({ ranges: [{ iova: MAPPED + BigInt(8 * PAGE), length: BigInt(4 * PAGE) }] });
    for (const p of [2, 8, 11, 12, 30]) await dev.dma.write(MAPPED + BigInt(p * PAGE), Uint8Array.of(1));
    await dev.dma.write(MAPPED + BigInt(7 * PAGE + PAGE - 4), new Uint8Array(8).fill(1)); // pages 7 and 8
    expect((await c.dirtyBitmap(MAPPED, BigInt(MAPPED_PAGES * PAGE))).dirtyPages()).toEqual([8, 11]);
  });

  it('a report at another page size repeats bits (finer) or folds them (coarser), and covers only the range asked', async () => {
    await c.startDirtyLogging();
    await dev.dma.write(MAPPED + BigInt(5 * PAGE), Uint8Array.of(1));
    const fine = await c.dirtyBitmap(MAPPED, BigInt(8 * PAGE), 1024n);
    expect(fine.dirtyPages()).toEqual([20, 21, 22, 23]);
    await dev.dma.write(MAPPED + BigInt(5 * PAGE), Uint8Array.of(1));
    const coarse = await c.dirtyBitmap(MAPPED, BigInt(16 * PAGE), 16384n);
    expect(coarse.dirtyPages()).toEqual([1]);
    expect(coarse.bytes.byteLength).toBe(8);
    // A prefix report leaves the pages after it alone.
    await dev.dma.write(MAPPED + BigInt(40 * PAGE), Uint8Array.of(1));
    expect((await c.dirtyBitmap(MAPPED, BigInt(8 * PAGE))).dirtyPages()).toEqual([]);
    expect((await c.dirtyBitmap(MAPPED, BigInt(MAPPED_PAGES * PAGE))).dirtyPages()).toEqual([40]);
  });

  it('unmapping a range drops its marks; a range mapped while logging is logged', async () => {
    await c.startDirtyLogging();
    await dev.dma.write(MAPPED, Uint8Array.of(1));
    await c.dmaUnmap(MAPPED, BigInt(MAPPED_PAGES * PAGE));
    const again = c.createGuestMemory(4 * PAGE);
    await c.dmaMap({ addr: MAPPED, backing: again });
    expect((await c.dirtyBitmap(MAPPED, BigInt(4 * PAGE))).dirtyPages()).toEqual([]);
    await dev.dma.write(MAPPED + BigInt(3 * PAGE), Uint8Array.of(1));
    expect((await c.dirtyBitmap(MAPPED, BigInt(4 * PAGE))).dirtyPages()).toEqual([3]);
  });
});
