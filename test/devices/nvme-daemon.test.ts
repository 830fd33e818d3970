/**
 * The NVMe controller in a real daemon process (`vfio-user-ts serve --device
 * nvme`), driven by the TypeScript client as a guest driver: a hostile guest
 * that aliases its shadow doorbells onto the EventIdx page must not stall
 * the process or grow its memory, and what Flush acknowledged survives
 * kill -9.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { ROOT, runDaemon, type DaemonProcess } from '../cli/daemon-process.js';
import { expectOk, GPA, Layout, NvmeGuest, type Sqe } from './nvme-driver.js';

const gpa = (off: number): bigint => GPA + BigInt(off);
const CSTS = 0x1c;
/** A 1024-entry SQ (64 KiB) past the driver's fixed areas. */
const BIG_SQ = 0x40_0000;
/** A second guest address for the shadow doorbell page: the same memfd page, mapped twice. */
const ALIAS = 0x2_0000_0000n;

let dir: TempDir;
const daemons: DaemonProcess[] = [];
const guests: NvmeGuest[] = [];

beforeEach(() => {
  dir = tempDir('nvme-daemon-');
});
afterEach(async () => {
  for (const g of guests.splice(0)) g.close();
  for (const d of daemons.splice(0)) {
    d.kill('SIGKILL');
    await d.exited;
  }
  dir.remove();
});

/** The daemon's built-in NVMe device on a 16 MiB image. */
function builtinNvme(socket: string, image: string): string[] {
  return ['--device', 'nvme', '--socket', socket, '--disk', image, '--size', '16M'];
}

/** The NVMe controller through a device module (fixtures/nvme-module.ts): `options` the built-in type lacks. */
function moduleNvme(socket: string, options: Record<string, unknown>): string[] {
  const config = dir.file('devices.json');
  const type = join(ROOT, 'test', 'devices', 'fixtures', 'nvme-module.ts');
  writeFileSync(config, JSON.stringify({ devices: [{ type, socket, name: 'nvme0', options }] }));
  return ['--config', config];
}

/** Start the daemon with `devices` (flags); resolves once it listens. */
async function startDaemon(devices: string[]): Promise<DaemonProcess> {
  const d = runDaemon(['serve', '--log-format', 'json', ...devices]);
  daemons.push(d);
  await d.waitFor(/"msg":"ready"/);
  return d;
}

/** Resident set of a process, in bytes. */
function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

describe('NVMe daemon under a hostile guest', () => {
  it('shadow doorbells aliased onto the EventIdx page: the process keeps answering and its memory stays flat', async () => {
    const socket = dir.file('nvme.sock');
    // Polling always on (pollAdaptive false): the idle poller's "do not ring" EventIdx is what lands in the shadow tail.
    const d = await startDaemon(moduleNvme(socket, { disk: dir.file('disk.img'), pollAdaptive: false }));
    const g = await NvmeGuest.connect(socket, true, { timeoutMs: 1500 });
    guests.push(g);
    await g.enable();
    expectOk(await g.admin({ opcode: 0x09, cdw10: 0x07, cdw11: 0 }));
    await g.createQueuePair({ qid: 1, sqAt: BIG_SQ, cqAt: Layout.IO_CQ, sqSize: 1024, cqSize: 64 });
    expectOk(await g.io(g.rw(1, 1, 0, 8, gpa(Layout.DATA)))); // a block in the page cache
    // Every slot of the ring: a read of that block, completed at once inside the fetch.
    const read = g.rw(2, 1, 0, 8, gpa(Layout.DATA2));
    for (let i = 0; i < 1024; i++) g.place(1, read); // a full lap: the driver's tail is back at 1
    for (let i = 0; i < 1021; i++) g.place(1, read); // tail 1022: "tail - 1" is a real slot
    // The shadow doorbell page, mapped a second time at ALIAS: EventIdx stores land in the shadow tails.
    await g.client.dmaMap({ addr: ALIAS, backing: g.guestMemory!, offset: Layout.SHADOW_DB, size: 4096n });
    expectOk(await g.admin({ opcode: 0x7c, prp1: gpa(Layout.SHADOW_DB), prp2: ALIAS }));
    const rss0 = rss(d.child.pid!);
    // Submit 1021 reads: shadow tail, then the MMIO doorbell (the EventIdx the controller publishes is useless here).
    g.view.setUint32(Layout.SHADOW_DB + 8, g.tail(1), true);
    await g.setReg(0x1008, g.tail(1), true);
    // For 1.5 s reap whatever comes (so CQ space never runs out) and time a register read every 20 ms.
    // (Which commands run is the guest's problem: its shadow tail is where we publish EventIdx, so
    // our stores overwrite its submissions. What must hold is that the process is not stalled.)
    let worst = 0;
    let reaped = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < 1500) {
      const t = Date.now();
      await g.reg(CSTS);
      worst = Math.max(worst, Date.now() - t);
      while (g.consume(1)) reaped++;
      await g.ringCqHead(1);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(worst).toBeLessThan(500);
    expect(rss(d.child.pid!) - rss0).toBeLessThan(64 << 20);
    expect(reaped).toBeGreaterThan(0);
    // And the controller resets and works.
    await g.disable(3000);
    await g.enable(3000);
    expectOk((await g.identify(1)).cqe);
  });
});

/** A 1 MiB write or read of namespace 1 at `slba` through the 1 MiB buffer at `buf` (its PRP list at PRP_LISTS + `list` pages). */
function mib(g: NvmeGuest, opcode: 1 | 2, slba: number, buf: number, list: number): Sqe {
  const listAt = Layout.PRP_LISTS + list * 4096;
  for (let p = 1; p < 256; p++) g.view.setBigUint64(listAt + (p - 1) * 8, gpa(buf + p * 4096), true);
  return g.rw(opcode, 1, slba, 2048, gpa(buf), gpa(listAt));
}

/** Read `mibs` MiB of namespace 1 from `slba` through the device. */
async function readBack(g: NvmeGuest, slba: number, mibs: number): Promise<Buffer> {
  const out: Buffer[] = [];
  for (let i = 0; i < mibs; i++) {
    expectOk(await g.io(mib(g, 2, slba + i * 2048, Layout.DATA2, 0)));
    out.push(Buffer.from(g.mem.subarray(Layout.DATA2, Layout.DATA2 + (1 << 20))));
  }
  return Buffer.concat(out);
}

/** Buffers for writes in flight at once: 1 MiB each, past the driver's fixed areas. */
const INFLIGHT_BUFFERS = [0x40_0000, 0x50_0000, 0x60_0000, 0x70_0000];

describe('NVMe daemon durability', () => {
  it('kill -9: what a completed Flush covered is all there after a restart; an unfinished write is old or new per block', async () => {
    const socket = dir.file('nvme.sock');
    const image = dir.file('disk.img');
    const d = await startDaemon(builtinNvme(socket, image));
    const g = await NvmeGuest.connect(socket);
    guests.push(g);
    await g.enable();
    await g.createIoQueues();
    // 4 MiB at LBA 0, acknowledged, then a Flush acknowledged.
    const flushed = randomBytes(4 << 20);
    for (let i = 0; i < 4; i++) {
      g.mem.set(flushed.subarray(i << 20, (i + 1) << 20), Layout.DATA);
      expectOk(await g.io(mib(g, 1, i * 2048, Layout.DATA, 0)));
    }
    expectOk(await g.io({ opcode: 0x00, nsid: 1 }));
    // 4 MiB at LBA 16384 written (the old data), then overwritten by four 1 MiB writes in flight at once.
    const oldData = randomBytes(4 << 20);
    for (let i = 0; i < 4; i++) {
      g.mem.set(oldData.subarray(i << 20, (i + 1) << 20), Layout.DATA);
      expectOk(await g.io(mib(g, 1, 16384 + i * 2048, Layout.DATA, 0)));
    }
    const newData = randomBytes(4 << 20);
    INFLIGHT_BUFFERS.forEach((buf, i) => {
      g.mem.set(newData.subarray(i << 20, (i + 1) << 20), buf);
      g.place(1, mib(g, 1, 16384 + i * 2048, buf, i + 1));
    });
    await g.ring(1);
    for (let i = 0; i < 2000 && !g.peek(1); i++) await new Promise((r) => setTimeout(r, 1)); // one is done: others may not be
    d.kill('SIGKILL');
    expect((await d.exited).signal).toBe('SIGKILL');
    g.close();

    // A new daemon on the same image.
    await startDaemon(builtinNvme(socket, image));
    const again = await NvmeGuest.connect(socket);
    guests.push(again);
    await again.enable();
    await again.createIoQueues();
    expect((await readBack(again, 0, 4)).equals(flushed)).toBe(true);
    const after = await readBack(again, 16384, 4);
    let olds = 0;
    let news = 0;
    for (let lba = 0; lba < (4 << 20) / 512; lba++) {
      const block = after.subarray(lba * 512, (lba + 1) * 512);
      if (block.equals(newData.subarray(lba * 512, (lba + 1) * 512))) news++;
      else if (block.equals(oldData.subarray(lba * 512, (lba + 1) * 512))) olds++;
      else expect.fail(`LBA ${16384 + lba} is neither the old nor the new data (a torn block)`);
    }
    expect(olds + news).toBe(8192);
    expect(news).toBeGreaterThanOrEqual(2048); // the write seen completed is there in full
  });
});
