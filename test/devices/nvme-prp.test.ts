/**
 * The PRP walk (devices/nvme/prp.ts) on its own, over a plain byte array
 * standing in for guest memory: merging of contiguous pages, lists that
 * start mid-page and chain to further pages, and the errors hostile lists
 * get (misaligned entries, addresses past any guest memory, endless chains).
 */
import { describe, expect, it } from 'vitest';
import { Status } from '../../devices/nvme/constants.js';
import { NvmeStatusError, type NvmeDma } from '../../devices/nvme/host.js';
import { prpSegments, prpSegmentsSync } from '../../devices/nvme/prp.js';

const BASE = 0x1_0000_0000n;
const PAGE = 4096;

/** 1 MiB of "guest memory" at BASE, readable in place. */
function memory(): { dma: NvmeDma; dv: DataView } {
  const bytes = new Uint8Array(1 << 20);
  const inRange = (addr: bigint, length: number) =>
    addr >= BASE && addr + BigInt(length) <= BASE + BigInt(bytes.length);
  const dma: NvmeDma = {
    view: (addr, length) => {
      if (!inRange(addr, length)) throw new Error(`0x${addr.toString(16)} not mapped`);
      return bytes.subarray(Number(addr - BASE), Number(addr - BASE) + length);
    },
    read: async (addr, length) => dma.view(addr, length)!.slice(),
    write: async (addr, data) => {
      dma.view(addr, data.length)!.set(data);
    },
  };
  return { dma, dv: new DataView(bytes.buffer) };
}

function statusOf(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof NvmeStatusError) return err.status;
    throw err;
  }
  return undefined;
}

describe('PRP walk', () => {
  it('merges contiguous pages and keeps the others apart', async () => {
    const { dma, dv } = memory();
    const list = 0x8_0000;
    // Data pages: 0x2000 (PRP1, from offset 0x200), then list entries 0x3000, 0x4000 (contiguous), 0x9000, 0xa000.
    [0x3000, 0x4000, 0x9000, 0xa000].forEach((p, i) => dv.setBigUint64(list + i * 8, BASE + BigInt(p), true));
    const length = PAGE - 0x200 + 3 * PAGE + 100;
    const want = [
      { addr: BASE + 0x2200n, length: PAGE - 0x200 + 2 * PAGE },
      { addr: BASE + 0x9000n, length: PAGE + 100 },
    ];
    expect(prpSegmentsSync(dma, BASE + 0x2200n, BASE + BigInt(list), length)).toEqual(want);
    expect(await prpSegments(dma, BASE + 0x2200n, BASE + BigInt(list), length)).toEqual(want);
  });

  it('follows a list that starts mid-page and chains through its last entry', () => {
    const { dma, dv } = memory();
    const first = 0x8_0000 + PAGE - 2 * 8; // room for one data entry and the chain pointer
    const second = 0x9_0000;
    dv.setBigUint64(first, BASE + 0x1_0000n, true);
    dv.setBigUint64(first + 8, BASE + BigInt(second), true);
    for (let i = 0; i < 3; i++) dv.setBigUint64(second + i * 8, BASE + BigInt(0x2_0000 + i * PAGE), true);
    const segments = prpSegmentsSync(dma, BASE, BASE + BigInt(first), 5 * PAGE);
    expect(segments).toEqual([
      { addr: BASE, length: PAGE },
      { addr: BASE + 0x1_0000n, length: PAGE },
      { addr: BASE + 0x2_0000n, length: 3 * PAGE },
    ]);
  });

  it('walks a 1 MiB transfer (256 entries) scattered over every other page', () => {
    const { dma, dv } = memory();
    const list = 0x8_0000;
    for (let i = 0; i < 255; i++) dv.setBigUint64(list + i * 8, BASE + BigInt((i + 1) * 2 * PAGE), true);
    const segments = prpSegmentsSync(dma, BASE, BASE + BigInt(list), 256 * PAGE)!;
    expect(segments).toHaveLength(256);
    expect(segments.reduce((n, s) => n + s.length, 0)).toBe(256 * PAGE);
    expect(segments[255]).toEqual({ addr: BASE + BigInt(255 * 2 * PAGE), length: PAGE });
  });

  it('answers hostile lists with NVMe errors', () => {
    const { dma, dv } = memory();
    const list = 0x8_0000;
    dv.setBigUint64(list, BASE + 0x3008n, true); // not page aligned
    expect(statusOf(() => prpSegmentsSync(dma, BASE, BASE + BigInt(list), 3 * PAGE))).toBe(Status.INVALID_PRP_OFFSET);
    dv.setBigUint64(list, 0xffff_f000_0000_0000n, true); // past any guest memory
    expect(statusOf(() => prpSegmentsSync(dma, BASE, BASE + BigInt(list), 3 * PAGE))).toBe(Status.DATA_TRANSFER_ERROR);
    expect(statusOf(() => prpSegmentsSync(dma, BASE + 2n, 0n, 100))).toBe(Status.INVALID_PRP_OFFSET); // PRP1 not dword aligned
    expect(statusOf(() => prpSegmentsSync(dma, BASE, BASE + 0x10n, PAGE + 1))).toBe(Status.INVALID_PRP_OFFSET); // PRP2 data pointer not page aligned
    // A list page whose chain pointer points back at itself: every page still
    // consumes entries, so the walk ends when the transfer length is covered.
    const loop = 0x9_0000;
    for (let i = 0; i < 511; i++) dv.setBigUint64(loop + i * 8, BASE + BigInt(0x1_0000), true);
    dv.setBigUint64(loop + 511 * 8, BASE + BigInt(loop), true);
    const segments = prpSegmentsSync(dma, BASE, BASE + BigInt(loop), 2000 * PAGE)!;
    expect(segments.reduce((n, s) => n + s.length, 0)).toBe(2000 * PAGE);
  });
});
