/**
 * The NVMe controller migrated between two daemon processes (`vfio-user-ts
 * serve --device nvme`, both on the same disk image, as two hosts on shared
 * storage) with the client's migrate() while a guest driver (the client)
 * keeps writes and reads going on four I/O queues with shadow doorbells.
 *
 * The client plays the VMM: its guest memory is a memfd mapped into the
 * source daemon, and a second one mapped into the destination. migrate()
 * copies it with the source's dirty bitmaps: those must cover every page the
 * device wrote (completion entries, read data, EventIdx). The guest's own
 * writes (its SQ entries, shadow doorbells, write buffers) are copied once
 * the "vCPUs" are stopped (beforeStopCopy), as a VMM's dirty tracking of
 * guest memory would, and only those: a page the device wrote and the
 * bitmap missed is stale on the destination and the test fails.
 *
 * After the destination resumes with the same driver state (moveTo), every
 * command completes exactly once, every read returns what was written, the
 * destination's MSI-X vectors fire, and everything written reads back.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { migrate, MigrationState, VfioUserClient, type GuestMemory } from '../../client/index.js';
import { PciIrq } from '../../protocol/constants.js';
import { runDaemon, type DaemonProcess } from '../cli/daemon-process.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { expectOk, GPA, Layout, NvmeGuest, type Cqe, type Sqe } from './nvme-driver.js';

const gpa = (off: number): bigint => GPA + BigInt(off);
const MEM_SIZE = 8 << 20;
const QUEUES = 4;
const QSIZE = 64;
/** Commands each queue keeps outstanding. */
const WINDOW = 8;
const sqAt = (qid: number): number => 0x8000 + (qid - 1) * 0x2000;
const cqAt = (qid: number): number => sqAt(qid) + 0x1000;
/** Buffers of queue `qid`'s window slot: writes come from DATA, reads land in DATA2. */
const writeBuf = (qid: number, slot: number): number => Layout.DATA + ((qid - 1) * WINDOW + slot) * 4096;
const readBuf = (qid: number, slot: number): number => Layout.DATA2 + ((qid - 1) * WINDOW + slot) * 4096;
/** Each queue writes its own 4 KiB blocks: block k of queue qid is at LBA (qid * 2048 + k) * 8. */
const lbaOf = (qid: number, k: number): number => (qid * 2048 + k) * 8;

/** The contents of block k of queue qid. */
function pattern(qid: number, k: number): Uint8Array {
  const b = new Uint8Array(4096);
  const v = new DataView(b.buffer);
  for (let j = 0; j < b.length; j += 4) v.setUint32(j, ((qid << 28) ^ (k << 12) ^ j) >>> 0, true);
  return b;
}

/** Guest memory the guest itself writes (copied when the vCPUs stop): every ring's SQ page, the admin SQ, the shadow doorbells, the write buffers. */
function guestWrittenRanges(): [number, number][] {
  const r: [number, number][] = [
    [Layout.ADMIN_SQ, 4096],
    [Layout.SHADOW_DB, 4096],
    [Layout.DATA, QUEUES * WINDOW * 4096],
  ];
  for (let qid = 1; qid <= QUEUES; qid++) r.push([sqAt(qid), 4096]);
  return r;
}

interface Outstanding {
  kind: 'write' | 'read';
  k: number;
  slot: number;
}

/** One queue's share of the workload: a window of writes and reads, each checked on completion. */
class QueueWorkload {
  readonly outstanding = new Map<number, Outstanding>();
  /** Blocks written and acknowledged. */
  readonly written: number[] = [];
  private next = 0;
  private freeSlots: number[] = Array.from({ length: WINDOW }, (_, i) => i);
  completed = 0;
  completedAfterMove = 0;
  readsChecked = 0;
  readonly problems: string[] = [];

  constructor(readonly qid: number) {}

  /** Place commands into free slots (writes of new blocks, or reads of acknowledged ones). */
  fill(g: NvmeGuest): number {
    let placed = 0;
    while (this.freeSlots.length > 0) {
      const slot = this.freeSlots.pop()!;
      let cmd: Sqe;
      let o: Outstanding;
      if (this.written.length > 0 && this.next % 3 === 2) {
        const k = this.written[(this.next * 7919) % this.written.length]!;
        g.mem.fill(0, readBuf(this.qid, slot), readBuf(this.qid, slot) + 4096);
        cmd = g.rw(2, 1, lbaOf(this.qid, k), 8, gpa(readBuf(this.qid, slot)));
        o = { kind: 'read', k, slot };
      } else {
        const k = this.next;
        g.mem.set(pattern(this.qid, k), writeBuf(this.qid, slot));
        cmd = g.rw(1, 1, lbaOf(this.qid, k), 8, gpa(writeBuf(this.qid, slot)));
        o = { kind: 'write', k, slot };
      }
      this.next++;
      const cid = g.place(this.qid, cmd);
      if (this.outstanding.has(cid)) this.problems.push(`cid ${cid} reused while outstanding`);
      this.outstanding.set(cid, o);
      placed++;
    }
    return placed;
  }

  /** Take every completion there is; each must be of an outstanding command. */
  reap(g: NvmeGuest, moved: boolean): number {
    let n = 0;
    for (let c: Cqe | undefined = g.consume(this.qid); c; c = g.consume(this.qid)) {
      n++;
      const o = this.outstanding.get(c.cid);
      if (!o) {
        this.problems.push(
          `CQ ${this.qid}: completion of cid ${c.cid}, which is not outstanding (twice, or never sent)`,
        );
        continue;
      }
      this.outstanding.delete(c.cid);
      this.freeSlots.push(o.slot);
      this.completed++;
      if (moved) this.completedAfterMove++;
      if (c.status !== 0)
        this.problems.push(`${o.kind} of block ${o.k} on queue ${this.qid}: status 0x${c.status.toString(16)}`);
      else if (o.kind === 'write') this.written.push(o.k);
      else {
        this.readsChecked++;
        const got = g.mem.subarray(readBuf(this.qid, o.slot), readBuf(this.qid, o.slot) + 4096);
        if (!Buffer.from(got).equals(Buffer.from(pattern(this.qid, o.k))))
          this.problems.push(`read of block ${o.k} on queue ${this.qid} returned other data`);
      }
    }
    return n;
  }
}

let dir: TempDir;
const daemons: DaemonProcess[] = [];
const closers: (() => void)[] = [];

beforeEach(() => {
  dir = tempDir('nvme-migration-');
});
afterEach(async () => {
  for (const c of closers.splice(0)) c();
  for (const d of daemons.splice(0)) {
    d.kill('SIGKILL');
    await d.exited;
  }
  dir.remove();
});

async function startDaemon(socket: string, image: string): Promise<void> {
  const d = runDaemon([
    'serve',
    '--log-format',
    'json',
    '--device',
    'nvme',
    '--socket',
    socket,
    '--disk',
    image,
    '--size',
    '64M',
    '--queues',
    `${QUEUES}`,
  ]);
  daemons.push(d);
  await d.waitFor(/"msg":"ready"/);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Wait for `done()`, at most `ms` (then fail with `what()`). */
async function waitFor(done: () => boolean, ms: number, what: () => string): Promise<void> {
  const until = Date.now() + ms;
  while (!done()) {
    if (Date.now() > until) throw new Error(`timed out: ${what()}`);
    await sleep(5);
  }
}

describe('NVMe migration between two daemon processes', { timeout: 120_000 }, () => {
  it('under I/O on 4 queues: every command completes once, reads return what was written, interrupts keep coming', async () => {
    const image = dir.file('disk.img');
    const sockA = dir.file('source.sock');
    const sockB = dir.file('destination.sock');
    await Promise.all([startDaemon(sockA, image), startDaemon(sockB, image)]);

    // The guest on the source.
    const source = await NvmeGuest.connect(sockA, true, { timeoutMs: 10_000 });
    closers.push(() => source.close());
    await source.client.enableIrqs(PciIrq.MSIX, QUEUES + 1);
    await source.enable();
    expectOk(await source.admin({ opcode: 0x09, cdw10: 0x07, cdw11: ((QUEUES - 1) << 16) | (QUEUES - 1) }));
    for (let qid = 1; qid <= QUEUES; qid++)
      await source.createQueuePair({ qid, sqAt: sqAt(qid), cqAt: cqAt(qid), sqSize: QSIZE, cqSize: QSIZE });
    expectOk(await source.enableShadowDoorbells());
    source.cqEventIdx = true; // as Linux: ring the CQ head doorbell when EventIdx asks

    // The destination, as a VMM realizes it: its own guest memory mapped, MSI-X eventfds; the
    // Command register (bus mastering) comes with the state.
    const destClient = await VfioUserClient.connect(sockB, { timeoutMs: 10_000 });
    closers.push(() => destClient.close());
    const destMem: GuestMemory = destClient.createGuestMemory(MEM_SIZE);
    await destClient.dmaMap({ addr: GPA, backing: destMem });
    await destClient.enableIrqs(PciIrq.MSIX, QUEUES + 1);

    // The workload: one loop per queue on whichever guest runs now, stopped while the vCPUs are.
    const work = Array.from({ length: QUEUES }, (_, i) => new QueueWorkload(i + 1));
    let guest: NvmeGuest = source;
    let moved = false;
    let vcpusStopped = false;
    let finishing = false;
    let aborted = false;
    closers.unshift(() => void (aborted = true)); // the loops end before the memory goes
    const parked = new Set<number>();
    const loops = work.map(async (w) => {
      while (!aborted) {
        if (vcpusStopped) {
          parked.add(w.qid);
          await sleep(1);
          continue;
        }
        parked.delete(w.qid);
        const g = guest;
        if (w.reap(g, moved) > 0) await g.ringCqHead(w.qid);
        if (!finishing && w.fill(g) > 0) await g.ring(w.qid); // so a full window is outstanding when the vCPUs stop
        if (finishing && w.outstanding.size === 0) return;
        await sleep(1);
      }
    });
    const totalCompleted = (): number => work.reduce((n, w) => n + w.completed, 0);
    const stuck = (): string =>
      work.map((w) => `queue ${w.qid}: ${w.completed} done, ${w.outstanding.size} outstanding`).join('; ');
    await waitFor(() => totalCompleted() >= 400, 20_000, stuck);
    const sourceIrqs = Array.from({ length: QUEUES }, (_, i) => source.client.irqCount(PciIrq.MSIX, i + 1));
    expect(sourceIrqs.every((n) => n > 0)).toBe(true);

    const t0 = performance.now();
    let tStopCopy = 0;
    const report = await migrate(source.client, destClient, {
      memory: [{ iova: GPA, source: source.mem, destination: destMem.bytes }],
      maxPreCopyRounds: 3,
      beforeStopCopy: async () => {
        // The VMM stops the vCPUs: wait until every loop is out of its step.
        vcpusStopped = true;
        while (parked.size < QUEUES) await sleep(1);
        tStopCopy = performance.now();
      },
      onSourceStopped: () => {
        // The guest's own writes since the first copy (a VMM's dirty tracking of the vCPUs).
        for (const [at, length] of guestWrittenRanges()) destMem.bytes.set(source.mem.subarray(at, at + length), at);
      },
    });
    const tRunning = performance.now();
    expect(await source.client.migrationState()).toBe(MigrationState.STOP);
    expect(await destClient.migrationState()).toBe(MigrationState.RUNNING);
    expect(report.stopCopyBytes).toBeGreaterThan(0);
    expect(report.dirtyPages).toBeGreaterThan(0);
    const inFlightAtStop = work.reduce((n, w) => n + w.outstanding.size, 0);
    expect(inFlightAtStop).toBeGreaterThan(0);

    // The vCPUs run again, on the destination.
    guest = source.moveTo(destClient, destMem.bytes, destMem);
    moved = true;
    vcpusStopped = false;
    const before = totalCompleted();
    await waitFor(
      () => totalCompleted() >= before + 400,
      20_000,
      () => `after the move: ${stuck()}`,
    );
    finishing = true;
    await waitFor(
      () => work.every((w) => w.outstanding.size === 0),
      10_000,
      () => `draining: ${stuck()}`,
    );
    await Promise.all(loops);

    for (const w of work) {
      expect(w.problems, `queue ${w.qid}`).toEqual([]);
      expect(w.completedAfterMove, `queue ${w.qid} after the move`).toBeGreaterThan(0);
      expect(w.readsChecked).toBeGreaterThan(0);
    }
    for (let qid = 1; qid <= QUEUES; qid++)
      expect(destClient.irqCount(PciIrq.MSIX, qid), `MSI-X vector ${qid} on the destination`).toBeGreaterThan(0);

    // Everything acknowledged is on disk: read it back through the destination (queue 1).
    const g = guest;
    for (const w of work) {
      for (const k of w.written) {
        expectOk(await g.submit(1, g.rw(2, 1, lbaOf(w.qid, k), 8, gpa(Layout.DATA2 + 0x8_0000))));
        const got = g.mem.subarray(Layout.DATA2 + 0x8_0000, Layout.DATA2 + 0x8_0000 + 4096);
        expect(Buffer.from(got).equals(Buffer.from(pattern(w.qid, k))), `queue ${w.qid} block ${k}`).toBe(true);
      }
    }
    if (process.env.VFU_REPORT)
      console.log(
        JSON.stringify({
          migrationMs: tRunning - t0,
          stopCopyToRunningMs: tRunning - tStopCopy,
          inFlightAtStop,
          report,
          completed: totalCompleted(),
        }),
      );
  });
});
