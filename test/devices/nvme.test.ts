/**
 * NVMe controller over a real vfio-user socket, driven by a small test driver
 * (test/devices/nvme-driver.ts): registers, admin commands, I/O with PRP
 * lists, error statuses for hostile input, shadow doorbells, fd-less guest
 * memory, reset and shutdown, and what lands in the backing file.
 */
import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IrqSetFlag, PciIrq } from '../../protocol/constants.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { COMMAND_MEMORY_MASTER, expectOk, GPA, Layout, NvmeTestHost, st } from './nvme-driver.js';
import type { NvmeControllerOptions } from '../../devices/nvme/index.js';
import { fileBytes } from '../helpers/file-bytes.js';

const NS1_SIZE = 16 << 20; // file, 512-byte LBAs
const NS2_SIZE = 8 << 20; // memory, 4 KiB LBAs

let dir: TempDir;
let host: NvmeTestHost;

async function startHost(shared = true, extra: Partial<NvmeControllerOptions> = {}): Promise<NvmeTestHost> {
  return NvmeTestHost.start(
    {
      name: 'nvme-unit',
      namespaces: [
        { path: dir.file('ns1.img'), size: NS1_SIZE, lbaSize: 512 },
        { size: NS2_SIZE, lbaSize: 4096 },
      ],
      serial: 'UNIT0001',
      model: 'unit model',
      firmware: 'fw1',
      queues: 2,
      ...extra,
    },
    shared,
  );
}

const gpa = (off: number): bigint => GPA + BigInt(off);

/** Each test of the enclosing describe gets a fresh temp dir and a controller host (memory shared by fd or not), stopped afterwards. */
function hostEachTest(shared = true, ready?: (h: NvmeTestHost) => Promise<void>): void {
  beforeEach(async () => {
    dir = tempDir('nvme-');
    host = await startHost(shared);
    await ready?.(host);
  });
  afterEach(async () => {
    await host.stop();
    dir.remove();
  });
}

describe('NVMe controller (registers and admin)', () => {
  hostEachTest();

  it('reports CAP/VS, becomes ready on CC.EN and creates a sparse backing file', async () => {
    const capLo = await host.reg(0x00);
    const capHi = await host.reg(0x04);
    expect(capLo & 0xffff).toBe(1023); // MQES
    expect((capLo >>> 16) & 1).toBe(1); // CQR
    expect(capHi & 0xf).toBe(0); // DSTRD
    expect((capHi >>> 5) & 1).toBe(1); // CSS: NVM
    expect(await host.reg(0x08)).toBe(0x00010400);
    expect(await host.reg(0x1c)).toBe(0);
    await host.enable();
    expect((await host.reg(0x14)) & 1).toBe(1);
    const st1 = statSync(dir.file('ns1.img'));
    expect(st1.size).toBe(NS1_SIZE);
    expect(st1.blocks * 512).toBeLessThan(NS1_SIZE);
  });

  it('answers Identify controller, namespaces, NS list and descriptors', async () => {
    await host.enable();
    const ctrl = await host.identify(1);
    expectOk(ctrl.cqe);
    const v = new DataView(ctrl.data.buffer);
    expect(v.getUint16(0, true)).toBe(0x4e58);
    expect(Buffer.from(ctrl.data.subarray(4, 24)).toString('latin1')).toBe('UNIT0001'.padEnd(20));
    expect(Buffer.from(ctrl.data.subarray(24, 64)).toString('latin1').trimEnd()).toBe('unit model');
    expect(Buffer.from(ctrl.data.subarray(64, 72)).toString('latin1').trimEnd()).toBe('fw1');
    expect(v.getUint32(516, true)).toBe(2); // NN
    expect(ctrl.data[512]).toBe(0x66);
    expect(ctrl.data[513]).toBe(0x44);
    expect(v.getUint16(256, true) & (1 << 8)).not.toBe(0); // OACS: doorbell buffer config

    const ns1 = await host.identify(0, 1);
    expectOk(ns1.cqe);
    const n1 = new DataView(ns1.data.buffer);
    expect(n1.getBigUint64(0, true)).toBe(BigInt(NS1_SIZE / 512));
    expect(ns1.data[130]).toBe(9); // LBAF0.LBADS
    const ns2 = await host.identify(0, 2);
    expect(new DataView(ns2.data.buffer).getBigUint64(0, true)).toBe(BigInt(NS2_SIZE / 4096));
    expect(ns2.data[130]).toBe(12);

    const list = await host.identify(2, 0);
    const l = new DataView(list.data.buffer);
    expect([l.getUint32(0, true), l.getUint32(4, true), l.getUint32(8, true)]).toEqual([1, 2, 0]);
    const after1 = await host.identify(2, 1);
    expect(new DataView(after1.data.buffer).getUint32(0, true)).toBe(2);

    const desc = await host.identify(3, 1);
    expectOk(desc.cqe);
    expect(desc.data[0]).toBe(2); // NGUID
    expect(desc.data[1]).toBe(16);
    expect(Buffer.from(desc.data.subarray(4, 20)).equals(Buffer.from(ns1.data.subarray(104, 120)))).toBe(true);

    expect((await host.identify(0, 7)).cqe.status).toBe(0); // inactive nsid: zeroes
    expect((await host.identify(3, 7)).cqe.status).toBe(st(0, 0x0b));
    expect((await host.identify(0x42)).cqe.status).toBe(st(0, 0x02));
    expectOk((await host.identify(6)).cqe);
    expectOk((await host.identify(5, 1)).cqe);
  });

  it('handles Get/Set Features and Get Log Page', async () => {
    await host.enable();
    const q = expectOk(await host.admin({ opcode: 0x09, cdw10: 0x07, cdw11: (15 << 16) | 15 }));
    expect(q.result).toBe((1 << 16) | 1); // clamped to 2 queues (0-based)
    expect(expectOk(await host.admin({ opcode: 0x0a, cdw10: 0x06 })).result).toBe(1); // VWC on
    expectOk(await host.admin({ opcode: 0x09, cdw10: 0x06, cdw11: 0 }));
    expect(expectOk(await host.admin({ opcode: 0x0a, cdw10: 0x06 })).result).toBe(0);
    expectOk(await host.admin({ opcode: 0x09, cdw10: 0x08, cdw11: 0x0a04 }));
    expect(expectOk(await host.admin({ opcode: 0x0a, cdw10: 0x08 })).result).toBe(0x0a04);
    expect(expectOk(await host.admin({ opcode: 0x0a, cdw10: 0x04 })).result).toBe(0x157);
    expect((await host.admin({ opcode: 0x0a, cdw10: 0x77 })).status).toBe(st(0, 0x02));
    expect((await host.admin({ opcode: 0x09, cdw10: 0x06 | (1 << 31), cdw11: 1 })).status).toBe(st(1, 0x0d));
    expectOk(await host.admin({ opcode: 0x09, cdw10: 0x0b, cdw11: 0x100 }));

    // SMART log (512 bytes = 128 dwords).
    host.mem.fill(0xee, Layout.DATA, Layout.DATA + 512);
    expectOk(await host.admin({ opcode: 0x02, nsid: 0xffffffff, prp1: gpa(Layout.DATA), cdw10: 0x02 | (127 << 16) }));
    expect(host.mem[Layout.DATA + 3]).toBe(100); // available spare
    expectOk(await host.admin({ opcode: 0x02, prp1: gpa(Layout.DATA), cdw10: 0x03 | (127 << 16) }));
    expect(host.mem[Layout.DATA]).toBe(1);
    expect((await host.admin({ opcode: 0x02, prp1: gpa(Layout.DATA), cdw10: 0x7f | (127 << 16) })).status).toBe(
      st(1, 0x09),
    );
    expect((await host.admin({ opcode: 0x55 })).status).toBe(st(0, 0x01));
    expect(expectOk(await host.admin({ opcode: 0x08 })).result & 1).toBe(1); // Abort: not aborted
  });

  it('validates Create/Delete I/O queue fields', async () => {
    await host.enable();
    expectOk(await host.admin({ opcode: 0x09, cdw10: 0x07, cdw11: 0x00010001 }));
    const cq = (cdw10: number, cdw11: number, prp1 = gpa(Layout.IO_CQ)) =>
      host.admin({ opcode: 0x05, prp1, cdw10, cdw11 });
    expect((await cq((63 << 16) | 0, 1)).status).toBe(st(1, 0x01)); // qid 0
    expect((await cq((63 << 16) | 3, 1)).status).toBe(st(1, 0x01)); // past granted
    expect((await cq((4095 << 16) | 1, 1)).status).toBe(st(1, 0x02)); // too big
    expect((await cq((63 << 16) | 1, 0)).status).toBe(st(0, 0x02)); // not contiguous
    expect((await cq((63 << 16) | 1, (9 << 16) | 1)).status).toBe(st(1, 0x08)); // vector 9 of 3
    expect((await cq((63 << 16) | 1, 1, gpa(Layout.IO_CQ + 8))).status).toBe(st(0, 0x13)); // misaligned: Invalid PRP Offset
    expect((await cq((63 << 16) | 1, 1, 0x7000_0000n)).status).toBe(st(0, 0x02)); // not in guest memory
    expect(
      (await host.admin({ opcode: 0x01, prp1: gpa(Layout.IO_SQ), cdw10: (63 << 16) | 1, cdw11: (1 << 16) | 1 })).status,
    ).toBe(st(1, 0x00));
    await host.createIoQueues();
    expect((await cq((63 << 16) | 1, 3)).status).toBe(st(1, 0x01)); // exists
    expect((await host.admin({ opcode: 0x04, cdw10: 1 })).status).toBe(st(1, 0x0c, false)); // CQ still has an SQ
    expectOk(await host.admin({ opcode: 0x00, cdw10: 1 }));
    expectOk(await host.admin({ opcode: 0x04, cdw10: 1 }));
    expect((await host.admin({ opcode: 0x00, cdw10: 1 })).status).toBe(st(1, 0x01));
  });

  it('ignores out-of-range doorbells and survives a submission queue full of garbage', async () => {
    await host.enable();
    await host.setReg(0x1000, 5000, true); // tail past the queue
    await host.setReg(0x1000 + 8 * 9, 1, true); // queue that does not exist
    await host.setReg(0x1002, 1); // not a 4-byte doorbell write
    // 20 random admin commands: each must complete with some status, in order of fetch.
    for (let i = 0; i < 20; i++) {
      const cid = host.place(0, { opcode: 0 });
      const at = Layout.ADMIN_SQ + (i % 64) * 64;
      host.mem.set(randomBytes(64), at);
      const v = host.view;
      let dw0 = v.getUint32(at, true);
      let op = dw0 & 0xff;
      if (op === 0x0c || op === 0x7c) op = 0x55; // AER completes later; keep dbbuf config out of it
      dw0 = ((dw0 & 0x0000ff00) | op | (cid << 16)) & ~(3 << 8); // no fused bits so it runs
      v.setUint32(at, dw0 >>> 0, true);
    }
    await host.ring(0);
    const seen = new Set<number>();
    for (let i = 0; i < 20; i++) seen.add((await host.reap(0, 10_000)).cid);
    expect(seen.size).toBe(20);
    // Still healthy.
    expect((await host.reg(0x1c)) & 3).toBe(1);
    expectOk((await host.identify(1)).cqe);
  });

  it('resets on CC.EN 1 -> 0 and on DEVICE_RESET, and completes a shutdown', async () => {
    await host.enable();
    await host.createIoQueues();
    await host.disable();
    expect(await host.reg(0x1c)).toBe(0);
    await host.enable();
    expectOk((await host.identify(1)).cqe);
    // Normal shutdown: SHST goes to complete.
    await host.setReg(0x14, (await host.reg(0x14)) | (1 << 14));
    await host.waitReg(0x1c, 0xc, 0x8);
    await host.client.reset();
    expect(await host.reg(0x1c)).toBe(0);
    expect(await host.reg(0x14)).toBe(0);
    await host.client.cfgWrite16(0x04, COMMAND_MEMORY_MASTER); // the reset cleared bus mastering
    await host.enable();
    expectOk((await host.identify(1)).cqe);
  });
});

describe('NVMe controller (I/O)', () => {
  for (const shared of [true, false]) {
    describe(shared ? 'guest memory shared by fd' : 'fd-less guest memory (DMA messages)', () => {
      hostEachTest(shared, async (h) => {
        await h.enable();
        await h.createIoQueues();
      });

      it('writes through a scattered PRP list and reads back; the file holds the data', async () => {
        const data = randomBytes(64 * 1024);
        // 16 pages in reverse order, first one at an offset of 512 bytes into a page.
        const pages = Array.from({ length: 17 }, (_, i) => Layout.DATA + (16 - i) * 4096);
        const first = pages[0]! + 512;
        host.mem.set(data.subarray(0, 4096 - 512), first);
        let pos = 4096 - 512;
        for (let i = 1; pos < data.length; i++) {
          host.mem.set(data.subarray(pos, pos + 4096), pages[i]);
          pos += 4096;
        }
        const v = host.view;
        for (let i = 1; i < 17; i++) v.setBigUint64(Layout.PRP_LISTS + (i - 1) * 8, gpa(pages[i]!), true);
        expectOk(await host.io(host.rw(1, 1, 100, 128, gpa(first), gpa(Layout.PRP_LISTS))));
        expect(fileBytes(dir.file('ns1.img'), 100 * 512, data.length).equals(data)).toBe(true);
        // Read it back contiguously (PRP list of 15 entries).
        for (let i = 1; i < 16; i++)
          v.setBigUint64(Layout.PRP_LISTS + 4096 + (i - 1) * 8, gpa(Layout.DATA2 + i * 4096), true);
        expectOk(await host.io(host.rw(2, 1, 100, 128, gpa(Layout.DATA2), gpa(Layout.PRP_LISTS + 4096))));
        expect(Buffer.from(host.mem.subarray(Layout.DATA2, Layout.DATA2 + data.length)).equals(data)).toBe(true);
        // Compare: equal, then different.
        expectOk(await host.io(host.rw(5, 1, 100, 8, gpa(Layout.DATA2), gpa(Layout.DATA2 + 4096))));
        host.mem[Layout.DATA2]! ^= 0xff;
        expect((await host.io(host.rw(5, 1, 100, 8, gpa(Layout.DATA2), gpa(Layout.DATA2 + 4096)))).status).toBe(
          st(2, 0x85),
        );
      });

      it('uses the memory namespace with 4 KiB blocks, Write Zeroes, DSM and Flush', async () => {
        const data = randomBytes(8192);
        host.mem.set(data, Layout.DATA);
        expectOk(await host.io(host.rw(1, 2, 3, 2, gpa(Layout.DATA), gpa(Layout.DATA + 4096))));
        expectOk(await host.io(host.rw(2, 2, 3, 2, gpa(Layout.DATA2), gpa(Layout.DATA2 + 4096))));
        expect(Buffer.from(host.mem.subarray(Layout.DATA2, Layout.DATA2 + 8192)).equals(data)).toBe(true);
        expectOk(await host.io({ opcode: 0x08, nsid: 2, cdw10: 4, cdw12: 0 })); // zero block 4
        expectOk(await host.io(host.rw(2, 2, 3, 2, gpa(Layout.DATA2), gpa(Layout.DATA2 + 4096))));
        expect(host.mem.subarray(Layout.DATA2 + 4096, Layout.DATA2 + 8192).every((b) => b === 0)).toBe(true);
        // DSM deallocate one range.
        const v = host.view;
        v.setUint32(Layout.DATA + 4, 2, true);
        v.setBigUint64(Layout.DATA + 8, 3n, true);
        expectOk(await host.io({ opcode: 0x09, nsid: 2, prp1: gpa(Layout.DATA), cdw10: 0, cdw11: 4 }));
        v.setBigUint64(Layout.DATA + 8, 1n << 40n, true);
        expect((await host.io({ opcode: 0x09, nsid: 2, prp1: gpa(Layout.DATA), cdw10: 0, cdw11: 4 })).status).toBe(
          st(0, 0x80),
        );
        expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
        expectOk(await host.io({ opcode: 0x00, nsid: 0xffffffff }));
      });

      it('answers hostile I/O with NVMe errors and keeps working', async () => {
        // PRP into unmapped guest memory: Data Transfer Error.
        const dte = st(0, 0x04, false);
        expect((await host.io(host.rw(2, 1, 0, 8, 0x10n))).status).toBe(dte);
        expect((await host.io(host.rw(1, 1, 0, 8, 0x10n))).status).toBe(dte);
        // PRP list pointing outside, misaligned entries, misaligned PRP1.
        expect((await host.io(host.rw(2, 1, 0, 64, gpa(Layout.DATA), 0x7000_0000n))).status).toBe(dte);
        host.view.setBigUint64(Layout.PRP_LISTS, gpa(Layout.DATA + 4096 + 12), true);
        expect((await host.io(host.rw(2, 1, 0, 24, gpa(Layout.DATA), gpa(Layout.PRP_LISTS)))).status).toBe(st(0, 0x13));
        expect((await host.io(host.rw(2, 1, 0, 1, gpa(Layout.DATA + 2)))).status).toBe(st(0, 0x13));
        // A PRP list whose last entry chains back to itself: bounded by the transfer length
        // (the final pass takes the chain slot as a data pointer, which is misaligned).
        const v = host.view;
        const loop = Layout.PRP_LISTS + 4096 - 16;
        v.setBigUint64(loop, gpa(Layout.DATA2), true);
        v.setBigUint64(loop + 8, gpa(loop), true);
        expect((await host.io(host.rw(2, 1, 0, 2048, gpa(Layout.DATA), gpa(loop)))).status).toBe(st(0, 0x13));
        expect((await host.io(host.rw(2, 1, 0, 2056, gpa(Layout.DATA), gpa(loop)))).status).toBe(st(0, 0x02)); // > MDTS
        // Bad namespace, LBA range, opcode, SGL, fused.
        expect((await host.io(host.rw(2, 9, 0, 1, gpa(Layout.DATA)))).status).toBe(st(0, 0x0b));
        expect((await host.io(host.rw(2, 1, NS1_SIZE / 512, 1, gpa(Layout.DATA)))).status).toBe(st(0, 0x80));
        expect((await host.io(host.rw(2, 1, 2 ** 40, 1, gpa(Layout.DATA)))).status).toBe(st(0, 0x80));
        expect((await host.io({ opcode: 0x7f, nsid: 1 })).status).toBe(st(0, 0x01));
        expect((await host.io({ ...host.rw(2, 1, 0, 1, gpa(Layout.DATA)), flags: 1 << 14 })).status).toBe(st(0, 0x02));
        expect((await host.io({ ...host.rw(2, 1, 0, 1, gpa(Layout.DATA)), flags: 1 << 8 })).status).toBe(st(0, 0x02));
        // Still fine.
        host.mem.set(randomBytes(512), Layout.DATA);
        expectOk(await host.io(host.rw(1, 1, 7, 1, gpa(Layout.DATA))));
        expect((await host.reg(0x1c)) & 3).toBe(1);
      });

      it('serves sequential small reads ahead, and a write is never hidden by read-ahead', async () => {
        const old = randomBytes(64 * 1024);
        for (let i = 0; i < 16; i++) {
          host.mem.set(old.subarray(i * 4096, (i + 1) * 4096), Layout.DATA);
          expectOk(await host.io(host.rw(1, 1, 2048 + i * 8, 8, gpa(Layout.DATA))));
        }
        const ra = host.nvme.namespaces[0]!.readAhead!;
        host.nvme.namespaces[0]!.pageCacheReads = false; // the page cache would answer first
        const readBlock = async (i: number) => {
          expectOk(await host.io(host.rw(2, 1, 2048 + i * 8, 8, gpa(Layout.DATA2))));
          return Buffer.from(host.mem.subarray(Layout.DATA2, Layout.DATA2 + 4096));
        };
        for (let i = 0; i < 4; i++)
          expect((await readBlock(i)).equals(old.subarray(i * 4096, (i + 1) * 4096))).toBe(true);
        await new Promise((r) => setTimeout(r, 50)); // let the window fill
        const hitsBefore = ra.hits;
        expect((await readBlock(4)).equals(old.subarray(4 * 4096, 5 * 4096))).toBe(true);
        expect(ra.hits).toBeGreaterThan(hitsBefore);
        // Overwrite block 6 (inside the fetched window), then read it: the new data.
        const fresh = randomBytes(4096);
        host.mem.set(fresh, Layout.DATA);
        expectOk(await host.io(host.rw(1, 1, 2048 + 6 * 8, 8, gpa(Layout.DATA))));
        expect((await readBlock(5)).equals(old.subarray(5 * 4096, 6 * 4096))).toBe(true);
        expect((await readBlock(6)).equals(fresh)).toBe(true);
        // Write Zeroes is a write too.
        expectOk(await host.io({ opcode: 0x08, nsid: 1, cdw10: 2048 + 7 * 8, cdw12: 7 }));
        expect((await readBlock(7)).every((b) => b === 0)).toBe(true);
      });

      it('serves cached reads from the page cache at once, and sees every write', async () => {
        const ns = host.nvme.namespaces[0]!;
        const data = randomBytes(8192);
        host.mem.set(data, Layout.DATA);
        expectOk(await host.io(host.rw(1, 1, 4096, 16, gpa(Layout.DATA), gpa(Layout.DATA + 4096))));
        const before = { ...ns.cacheStats };
        host.mem.fill(0, Layout.DATA2, Layout.DATA2 + 8192);
        expectOk(await host.io(host.rw(2, 1, 4096, 16, gpa(Layout.DATA2), gpa(Layout.DATA2 + 4096))));
        expect(Buffer.from(host.mem.subarray(Layout.DATA2, Layout.DATA2 + 8192)).equals(data)).toBe(true);
        expect(ns.cacheStats.hits).toBeGreaterThan(before.hits);
        // Overwrite the second block, read both again: the new bytes.
        const fresh = randomBytes(4096);
        host.mem.set(fresh, Layout.DATA);
        expectOk(await host.io(host.rw(1, 1, 4096 + 8, 8, gpa(Layout.DATA))));
        expectOk(await host.io(host.rw(2, 1, 4096, 16, gpa(Layout.DATA2), gpa(Layout.DATA2 + 4096))));
        expect(Buffer.from(host.mem.subarray(Layout.DATA2, Layout.DATA2 + 4096)).equals(data.subarray(0, 4096))).toBe(
          true,
        );
        expect(Buffer.from(host.mem.subarray(Layout.DATA2 + 4096, Layout.DATA2 + 8192)).equals(fresh)).toBe(true);
        // A PRP list (3 pages): still one synchronous read, same bytes as the file.
        const v = host.view;
        v.setBigUint64(Layout.PRP_LISTS, gpa(Layout.DATA2 + 4096), true);
        v.setBigUint64(Layout.PRP_LISTS + 8, gpa(Layout.DATA2 + 8192), true);
        expectOk(await host.io(host.rw(2, 1, 0, 24, gpa(Layout.DATA2), gpa(Layout.PRP_LISTS))));
        expect(
          Buffer.from(host.mem.subarray(Layout.DATA2, Layout.DATA2 + 12288)).equals(
            fileBytes(dir.file('ns1.img'), 0, 12288),
          ),
        ).toBe(true);
      });

      it('keeps many commands in flight and completes every one', async () => {
        const n = 48;
        const cids: number[] = [];
        for (let i = 0; i < n; i++) {
          host.mem.fill(i, Layout.DATA + i * 4096, Layout.DATA + (i + 1) * 4096);
          cids.push(host.place(1, host.rw(1, 1, i * 8, 8, gpa(Layout.DATA + i * 4096))));
        }
        await host.ring(1);
        const done = new Set<number>();
        for (let i = 0; i < n; i++) done.add(expectOk(await host.reap(1)).cid);
        expect([...done].sort()).toEqual([...cids].sort());
        const file = fileBytes(dir.file('ns1.img'), 0, n * 4096);
        for (let i = 0; i < n; i++) expect(file[i * 4096 + 100]).toBe(i);
      });
    });
  }
});

describe('NVMe controller (guest memory remapped)', () => {
  hostEachTest();

  it('keeps working after the client unmaps and maps its memory again', async () => {
    await host.enable();
    await host.createIoQueues();
    expectOk(await host.enableShadowDoorbells());
    expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    await host.client.dmaUnmap(GPA, BigInt(host.mem.length));
    await host.client.dmaMap({ addr: GPA, backing: host.guestMemory! });
    const data = randomBytes(4096);
    host.mem.set(data, Layout.DATA);
    expectOk(await host.io(host.rw(1, 1, 8, 8, gpa(Layout.DATA))));
    expectOk(await host.io(host.rw(2, 1, 8, 8, gpa(Layout.DATA2))));
    expect(Buffer.from(host.mem.subarray(Layout.DATA2, Layout.DATA2 + 4096)).equals(data)).toBe(true);
    expectOk((await host.identify(1)).cqe);
  });
});

describe('NVMe controller (shadow doorbells)', () => {
  beforeEach(async () => {
    dir = tempDir('nvme-');
  });
  afterEach(async () => {
    await host.stop();
    dir.remove();
  });

  it('accepts Doorbell Buffer Config and follows EventIdx', async () => {
    host = await startHost(true, { pollMicros: 0 }); // no polling: EventIdx always asks for the next doorbell
    await host.enable();
    await host.createIoQueues();
    expect(
      (await host.admin({ opcode: 0x7c, prp1: gpa(Layout.SHADOW_DB + 8), prp2: gpa(Layout.EVENT_IDX) })).status,
    ).toBe(st(0, 0x02));
    expectOk(await host.enableShadowDoorbells());
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 70; i++) {
        host.mem.fill(i & 0xff, Layout.DATA, Layout.DATA + 512);
        expectOk(await host.io(host.rw(1, 1, i, 1, gpa(Layout.DATA))));
      }
    }
    // EventIdx for SQ 1 tracks the tail we consumed.
    const v = host.view;
    expect(v.getUint32(Layout.EVENT_IDX + 8, true)).toBe(v.getUint32(Layout.SHADOW_DB + 8, true));
    expect(fileBytes(dir.file('ns1.img'), 69 * 512, 1)[0]).toBe(69);
  });

  it('is refused for fd-less guest memory', async () => {
    host = await startHost(false);
    await host.enable();
    expect((await host.enableShadowDoorbells()).status).toBe(st(0, 0x02));
  });
});

describe('NVMe controller (interrupts)', () => {
  hostEachTest();

  it('signals the MSI-X vector of each CQ', async () => {
    await host.enable();
    await host.createIoQueues(); // CQ 1 on vector 1, admin CQ on vector 0
    const v1 = host.client.waitForIrq(PciIrq.MSIX, 1);
    expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    await v1;
    const v0 = host.client.waitForIrq(PciIrq.MSIX, 0);
    expectOk((await host.identify(1)).cqe);
    await v0;
  });

  it('coalesces I/O completions into one interrupt per threshold + 1 (feature 08h)', async () => {
    await host.enable();
    await host.createIoQueues();
    expectOk(await host.admin({ opcode: 0x09, cdw10: 0x08, cdw11: 3 })); // 4 completions, no time limit
    const before = host.client.irqCount(PciIrq.MSIX, 1);
    for (let i = 0; i < 3; i++) expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    const fired = host.client.waitForIrq(PciIrq.MSIX, 1);
    expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    await fired;
    expect(host.client.irqCount(PciIrq.MSIX, 1) - before).toBe(1);
    // Vector 1 with coalescing disabled: every completion interrupts again.
    expectOk(await host.admin({ opcode: 0x09, cdw10: 0x09, cdw11: (1 << 16) | 1 }));
    const again = host.client.waitForIrq(PciIrq.MSIX, 1);
    expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    await again;
  });

  it('falls back to INTx when MSI-X is off, and INTMS/INTMC mask it', async () => {
    const count = () => host.client.irqCount(PciIrq.INTX, 0);
    const waitCount = async (n: number) => {
      for (let i = 0; i < 2000 && count() < n; i++) await new Promise((r) => setTimeout(r, 2));
      expect(count()).toBeGreaterThanOrEqual(n);
    };
    const unmask = () =>
      host.client.setIrqs({
        flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK,
        index: PciIrq.INTX,
        start: 0,
        count: 1,
      });
    await host.client.disableIrqs(PciIrq.MSIX);
    await host.client.enableIrqs(PciIrq.INTX, 1);
    await host.enable();
    expectOk((await host.identify(1)).cqe);
    await waitCount(1);
    await unmask(); // the guest's EOI
    await host.setReg(0x0c, 1); // INTMS
    expect(await host.reg(0x0c)).toBe(1);
    expectOk((await host.identify(1)).cqe);
    await new Promise((r) => setTimeout(r, 20));
    expect(count()).toBe(1);
    await host.setReg(0x10, 1); // INTMC: the held interrupt is delivered
    await waitCount(2);
    expect(await host.reg(0x0c)).toBe(0);
  });
});

describe('NVMe controller (durability)', () => {
  beforeEach(() => {
    dir = tempDir('nvme-');
  });
  afterEach(() => dir.remove());

  it('resets on FLR (PCIe Initiate Function Level Reset) and keeps acknowledged data', async () => {
    host = await startHost(true);
    await host.enable();
    await host.createIoQueues();
    const data = randomBytes(4096);
    host.mem.set(data, Layout.DATA);
    expectOk(await host.io(host.rw(1, 1, 80, 8, gpa(Layout.DATA))));
    const express = host.nvme.device.capabilities.express!;
    await host.client.cfgWrite16(express + 8, (await host.client.cfg16(express + 8)) | (1 << 15));
    await host.waitReg(0x1c, 1, 0);
    expect(await host.reg(0x14)).toBe(0);
    expect(await host.client.cfg16(0x04)).toBe(0); // the FLR cleared bus mastering: the driver sets it again
    await host.client.cfgWrite16(0x04, COMMAND_MEMORY_MASTER);
    await host.enable();
    await host.createIoQueues();
    expectOk(await host.io(host.rw(2, 1, 80, 8, gpa(Layout.DATA2))));
    expect(Buffer.from(host.mem.subarray(Layout.DATA2, Layout.DATA2 + 4096)).equals(data)).toBe(true);
    await host.stop();
  });

  it('keeps acknowledged writes across reset, disconnect and restart', async () => {
    host = await startHost(true);
    await host.enable();
    await host.createIoQueues();
    const data = randomBytes(4096);
    host.mem.set(data, Layout.DATA);
    expectOk(await host.io(host.rw(1, 1, 40, 8, gpa(Layout.DATA))));
    await host.disable();
    await host.enable();
    await host.createIoQueues();
    // VWC off: writes are durable when acknowledged.
    expectOk(await host.admin({ opcode: 0x09, cdw10: 0x06, cdw11: 0 }));
    const data2 = randomBytes(4096);
    host.mem.set(data2, Layout.DATA);
    expectOk(await host.io(host.rw(1, 1, 48, 8, gpa(Layout.DATA))));
    // Queue writes and drop the client while they run.
    for (let i = 0; i < 16; i++) host.place(1, host.rw(1, 1, 1000 + i * 8, 8, gpa(Layout.DATA)));
    await host.ring(1);
    await host.stop();
    const file = fileBytes(dir.file('ns1.img'), 40 * 512, 8192);
    expect(file.subarray(0, 4096).equals(data)).toBe(true);
    expect(file.subarray(4096).equals(data2)).toBe(true);
    // A new controller on the same file sees it.
    host = await startHost(true);
    await host.enable();
    await host.createIoQueues();
    expectOk(await host.io(host.rw(2, 1, 40, 16, gpa(Layout.DATA2), gpa(Layout.DATA2 + 4096))));
    expect(Buffer.from(host.mem.subarray(Layout.DATA2, Layout.DATA2 + 4096)).equals(data)).toBe(true);
    await host.stop();
  });
});

describe('NVMe controller (per-command timing)', () => {
  beforeEach(() => {
    dir = tempDir('nvme-');
  });
  afterEach(() => dir.remove());

  it('is off unless asked for; on, it counts every command and its time inside the controller', async () => {
    host = await startHost(true);
    await host.enable();
    expectOk((await host.identify(1)).cqe);
    expect(host.nvme.timing()).toBeUndefined();
    await host.stop();
    host = await startHost(true, { timing: true });
    await host.enable();
    await host.createIoQueues(); // three admin commands
    for (let i = 0; i < 5; i++) expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    const t = host.nvme.timing()!;
    expect(t.commands).toBe(8);
    expect(t.meanMicros).toBeGreaterThan(0);
    await host.stop();
  });
});
