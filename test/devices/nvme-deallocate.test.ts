/**
 * Deallocate through a real NVMe controller on a real socket: Dataset
 * Management with the AD attribute punches holes in the backing file (its
 * st_blocks drop, the LBAs read zeros, neighbours keep their data), a bad
 * range anywhere in a multi-range DSM changes nothing, Write Zeroes with and
 * without DEAC reads zeros, memory namespaces zero, and Identify Namespace
 * reports DLFEAT.
 */
import { randomBytes } from 'node:crypto';
import { fstatSync, statSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Namespace } from '../../devices/nvme/namespace.js';
import { native } from '../../native/index.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { expectOk, GPA, Layout, NvmeTestHost, st } from './nvme-driver.js';

const NS1_SIZE = 16 << 20; // file, 512-byte LBAs
const NS2_SIZE = 8 << 20; // memory, 4 KiB LBAs
const KiB = 1024;

let dir: TempDir;
let host: NvmeTestHost;

const gpa = (off: number): bigint => GPA + BigInt(off);
const imgBlocks = (): number => statSync(dir.file('ns1.img')).blocks;
const allZero = (b: Uint8Array): boolean => b.every((x) => x === 0);

/** PRP1/PRP2 for `length` bytes of contiguous guest pages at `area` (a PRP list at `list` when more than two pages). */
function prps(area: number, length: number, list: number): { prp1: bigint; prp2: bigint } {
  const pages = Math.ceil(length / 4096);
  if (pages <= 1) return { prp1: gpa(area), prp2: 0n };
  if (pages === 2) return { prp1: gpa(area), prp2: gpa(area + 4096) };
  const v = host.view;
  for (let i = 1; i < pages; i++) v.setBigUint64(list + (i - 1) * 8, gpa(area + i * 4096), true);
  return { prp1: gpa(area), prp2: gpa(list) };
}

/** Write `data` (at most 1 MiB) at `slba` of namespace `nsid` through the controller. */
async function writeLbas(nsid: number, lbaSize: number, slba: number, data: Uint8Array): Promise<void> {
  host.mem.set(data, Layout.DATA);
  const { prp1, prp2 } = prps(Layout.DATA, data.length, Layout.PRP_LISTS);
  expectOk(await host.io(host.rw(1, nsid, slba, data.length / lbaSize, prp1, prp2)));
}

/** Read `length` bytes (at most 1 MiB) at `slba` of namespace `nsid` through the controller. */
async function readLbas(nsid: number, lbaSize: number, slba: number, length: number): Promise<Buffer> {
  host.mem.fill(0xee, Layout.DATA2, Layout.DATA2 + length);
  const { prp1, prp2 } = prps(Layout.DATA2, length, Layout.PRP_LISTS + 0x8000);
  expectOk(await host.io(host.rw(2, nsid, slba, length / lbaSize, prp1, prp2)));
  return Buffer.from(host.mem.slice(Layout.DATA2, Layout.DATA2 + length));
}

/** Put DSM ranges ([slba, nlb]) at Layout.DATA + 0x80000 and return the DSM command (AD unless `attributes` says otherwise). */
function dsm(nsid: number, ranges: readonly (readonly [number | bigint, number])[], attributes = 1 << 2) {
  const at = Layout.DATA + 0x8_0000;
  const v = host.view;
  host.mem.fill(0, at, at + ranges.length * 16);
  ranges.forEach(([slba, nlb], i) => {
    v.setUint32(at + i * 16 + 4, nlb, true);
    v.setBigUint64(at + i * 16 + 8, BigInt(slba), true);
  });
  const { prp1, prp2 } = prps(at, ranges.length * 16, Layout.PRP_LISTS + 0x1_0000);
  return { opcode: 0x09, nsid, prp1, prp2, cdw10: ranges.length - 1, cdw11: attributes };
}

/** Write Zeroes of `blocks` LBAs at `slba`, with the DEAC bit when asked. */
const writeZeroes = (nsid: number, slba: number, blocks: number, deac: boolean) => ({
  opcode: 0x08,
  nsid,
  cdw10: slba,
  cdw11: 0,
  cdw12: (blocks - 1) | (deac ? 1 << 25 : 0),
});

for (const shared of [true, false]) {
  describe(`NVMe deallocate (${shared ? 'guest memory shared by fd' : 'fd-less guest memory'})`, () => {
    beforeEach(async () => {
      dir = tempDir('nvme-dealloc-');
      host = await NvmeTestHost.start(
        {
          name: 'nvme-dealloc',
          namespaces: [
            { path: dir.file('ns1.img'), size: NS1_SIZE, lbaSize: 512 },
            { size: NS2_SIZE, lbaSize: 4096 },
          ],
          serial: 'DEALLOC1',
          queues: 2,
        },
        shared,
      );
      await host.enable();
      await host.createIoQueues();
    });
    afterEach(async () => {
      await host.stop();
      dir.remove();
    });

    it('reports DLFEAT 0x09 for a hole-punching file and for memory; ONCS has DSM and Write Zeroes', async () => {
      const ctrl = await host.identify(1);
      expectOk(ctrl.cqe);
      const oncs = new DataView(ctrl.data.buffer).getUint16(520, true);
      expect(oncs & (1 << 2)).not.toBe(0);
      expect(oncs & (1 << 3)).not.toBe(0);
      const ns1 = await host.identify(0, 1);
      expectOk(ns1.cqe);
      expect(ns1.data[33]).toBe(0x09);
      expect(ns1.data[24]).toBe(0); // NSFEAT
      expect((await host.identify(0, 2)).data[33]).toBe(0x09);
    });

    it('DSM deallocate punches holes: st_blocks drop, zeros read back, neighbours untouched', async () => {
      const data = randomBytes(1024 * KiB);
      await writeLbas(1, 512, 0, data);
      expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
      // Fill read-ahead windows over the range about to go (the page cache path would answer first).
      host.nvme.namespaces[0]!.pageCacheReads = false;
      for (let i = 0; i < 8; i++) await readLbas(1, 512, 512 + i * 8, 4 * KiB);
      const before = imgBlocks();
      // Two ranges: LBAs 512..1023 and 1024..1535 (512 KiB in all), plus an empty one.
      expectOk(
        await host.io(
          dsm(1, [
            [512, 512],
            [1024, 512],
            [2000, 0],
          ]),
        ),
      );
      const after = imgBlocks();
      expect(before - after).toBeGreaterThanOrEqual((512 * KiB) / 512);
      expect(statSync(dir.file('ns1.img')).size).toBe(NS1_SIZE);
      const back = await readLbas(1, 512, 0, 1024 * KiB);
      expect(back.subarray(0, 256 * KiB).equals(data.subarray(0, 256 * KiB))).toBe(true);
      expect(allZero(back.subarray(256 * KiB, 768 * KiB))).toBe(true);
      expect(back.subarray(768 * KiB).equals(data.subarray(768 * KiB))).toBe(true);
      // Small reads inside the hole (read-ahead path) read zeros too.
      for (let i = 0; i < 8; i++) expect(allZero(await readLbas(1, 512, 512 + i * 8, 4 * KiB))).toBe(true);
      // A Flush after deallocate completes (the namespace is dirty again).
      expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    });

    it('a bad range anywhere in a multi-range DSM fails with LBA Out of Range and changes nothing', async () => {
      const data = randomBytes(256 * KiB);
      await writeLbas(1, 512, 0, data);
      const before = imgBlocks();
      const blocks = NS1_SIZE / 512;
      for (const bad of [
        [blocks - 4, 5],
        [blocks, 1],
        [2n ** 63n, 1],
        [2n ** 64n - 1n, 2],
      ] as const) {
        const c = await host.io(dsm(1, [[0, 64], [128, 64], bad, [256, 64]]));
        expect(c.status).toBe(st(0, 0x80));
      }
      expect(imgBlocks()).toBe(before);
      expect((await readLbas(1, 512, 0, 256 * KiB)).equals(data)).toBe(true);
      // The last LBA exactly is fine; so are 256 ranges (NR = 255).
      expectOk(await host.io(dsm(1, [[blocks - 1, 1]])));
      const many = Array.from({ length: 256 }, (_, i) => [i * 2, 1] as const);
      expectOk(await host.io(dsm(1, many)));
      const back = await readLbas(1, 512, 0, 256 * KiB);
      for (let lba = 0; lba < 512; lba++) {
        const block = back.subarray(lba * 512, (lba + 1) * 512);
        if (lba % 2 === 0) expect(allZero(block)).toBe(true);
        else expect(block.equals(data.subarray(lba * 512, (lba + 1) * 512))).toBe(true);
      }
    });

    it('DSM without AD (IDR/IDW hints only) changes nothing', async () => {
      const data = randomBytes(64 * KiB);
      await writeLbas(1, 512, 64, data);
      const before = imgBlocks();
      expectOk(await host.io(dsm(1, [[64, 128]], 0x3)));
      expect(imgBlocks()).toBe(before);
      expect((await readLbas(1, 512, 64, 64 * KiB)).equals(data)).toBe(true);
    });

    it('Write Zeroes with and without DEAC reads zeros; DEAC frees the blocks', async () => {
      const data = randomBytes(512 * KiB);
      await writeLbas(1, 512, 0, data);
      expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
      // Without DEAC: LBAs 16..271 (128 KiB).
      expectOk(await host.io(writeZeroes(1, 16, 256, false)));
      // With DEAC: LBAs 512..767 (128 KiB, 4 KiB-aligned so whole file-system blocks go).
      const before = imgBlocks();
      expectOk(await host.io(writeZeroes(1, 512, 256, true)));
      expect(before - imgBlocks()).toBeGreaterThanOrEqual((128 * KiB) / 512);
      const back = await readLbas(1, 512, 0, 512 * KiB);
      expect(back.subarray(0, 8 * KiB).equals(data.subarray(0, 8 * KiB))).toBe(true);
      expect(allZero(back.subarray(8 * KiB, 136 * KiB))).toBe(true);
      expect(back.subarray(136 * KiB, 256 * KiB).equals(data.subarray(136 * KiB, 256 * KiB))).toBe(true);
      expect(allZero(back.subarray(256 * KiB, 384 * KiB))).toBe(true);
      expect(back.subarray(384 * KiB).equals(data.subarray(384 * KiB))).toBe(true);
      // Past the end: LBA Out of Range, with or without DEAC.
      expect((await host.io(writeZeroes(1, NS1_SIZE / 512 - 1, 2, true))).status).toBe(st(0, 0x80));
      expect((await host.io(writeZeroes(1, NS1_SIZE / 512 - 1, 2, false))).status).toBe(st(0, 0x80));
    });

    it('memory namespace: DSM deallocate and Write Zeroes (with and without DEAC) read zeros', async () => {
      const data = randomBytes(64 * KiB); // 16 blocks of 4 KiB at LBA 10
      await writeLbas(2, 4096, 10, data);
      expectOk(
        await host.io(
          dsm(2, [
            [11, 2],
            [20, 1],
          ]),
        ),
      );
      expectOk(await host.io(writeZeroes(2, 14, 1, false)));
      expectOk(await host.io(writeZeroes(2, 16, 2, true)));
      expect(
        (
          await host.io(
            dsm(2, [
              [12, 1],
              [NS2_SIZE / 4096, 1],
            ]),
          )
        ).status,
      ).toBe(st(0, 0x80));
      const back = await readLbas(2, 4096, 10, 64 * KiB);
      const zeroed = new Set([11, 12, 14, 16, 17, 20]);
      for (let lba = 10; lba < 26; lba++) {
        const block = back.subarray((lba - 10) * 4096, (lba - 9) * 4096);
        if (zeroed.has(lba)) expect(allZero(block)).toBe(true);
        else expect(block.equals(data.subarray((lba - 10) * 4096, (lba - 9) * 4096))).toBe(true);
      }
    });
  });
}

describe('NVMe namespace on tmpfs (hole punching, no ZERO_RANGE)', () => {
  it('zeroes by writing once ZERO_RANGE is refused, and still punches holes on deallocate', async () => {
    const mfd = native.memfdCreate('nvme-ns', 1 << 20);
    const ns = new Namespace(1, { path: `/proc/self/fd/${mfd}`, lbaSize: 512 }, 'TMPFS');
    try {
      expect(ns.deallocateReadsZeroes).toBe(true);
      const data = randomBytes(1 << 20);
      await ns.write(0, data);
      await ns.zero(4096, 8192);
      expect((ns as unknown as { zeroRange: boolean }).zeroRange).toBe(false); // EOPNOTSUPP remembered
      await ns.zero(65536 + 512, 1024);
      const before = fstatSync(mfd).blocks;
      await ns.deallocate(256 * KiB, 256 * KiB);
      expect(before - fstatSync(mfd).blocks).toBeGreaterThanOrEqual((256 * KiB) / 512);
      await ns.flush();
      const back = new Uint8Array(1 << 20);
      await ns.read(0, back);
      const zeros: [start: number, length: number][] = [
        [4096, 8192],
        [65536 + 512, 1024],
        [256 * KiB, 256 * KiB],
      ];
      let at = 0;
      for (const [start, length] of zeros) {
        expect(Buffer.from(back.subarray(at, start)).equals(data.subarray(at, start))).toBe(true);
        expect(allZero(back.subarray(start, start + length))).toBe(true);
        at = start + length;
      }
      expect(Buffer.from(back.subarray(at)).equals(data.subarray(at))).toBe(true);
    } finally {
      await ns.close();
      native.closeFd(mfd);
    }
  });
});
