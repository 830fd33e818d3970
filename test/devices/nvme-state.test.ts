/**
 * The NVMe controller's saved state (devices/nvme/state.ts) through
 * PciDevice's quiesce / saveState / loadState / resume, with a real driver
 * on a real socket:
 * - every field round-trips: a second controller that loads a state saves
 *   the very same bytes;
 * - states this controller cannot run are refused with a StateError naming
 *   the problem (and both versions, for a version it does not read), and
 *   leave it as it was;
 * - quiesce under load: with 96 writes in flight on four I/O queues (one
 *   CQ too small for its commands), every fetched command completes into
 *   its CQ or is parked; nothing new is fetched while held (MMIO or shadow
 *   doorbell); a second controller that loads the state, on the same guest
 *   memory, posts the parked completions and fetches what was left, and
 *   every command completes exactly once with its data on disk.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../client/index.js';
import { NvmeController, NVME_STATE_KIND, type NvmeControllerOptions } from '../../devices/nvme/index.js';
import { nvmeStateFields, type NvmeSavedState } from '../../devices/nvme/state.js';
import { PciIrq } from '../../protocol/constants.js';
import { serve } from '../../server/server.js';
import { decodeEnvelope, encodeEnvelope } from '../../server/state/envelope.js';
import { decodeField, encodeField, StateError } from '../../server/state/fields.js';
import { tempDir, tempSocketPath, type TempDir } from '../helpers/temp.js';
import { expectOk, GPA, Layout, NvmeGuest, NvmeTestHost, type Cqe } from './nvme-driver.js';

const TAGS = ['PCI ', 'BARM', 'DEV '];
const gpa = (off: number): bigint => GPA + BigInt(off);
/** I/O queue pair `qid`: SQ and CQ pages past the driver's fixed areas. */
const sqAt = (qid: number): number => 0x8000 + (qid - 1) * 0x2000;
const cqAt = (qid: number): number => sqAt(qid) + 0x1000;

let dir: TempDir;
const cleanups: (() => Promise<void> | void)[] = [];

beforeEach(() => {
  dir = tempDir('nvme-state-');
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  dir.remove();
});

function options(name: string, extra: Partial<NvmeControllerOptions> = {}): NvmeControllerOptions {
  return {
    name,
    namespaces: [{ path: dir.file('ns1.img'), size: 16 << 20, lbaSize: 512 }],
    serial: 'STATE0001',
    queues: 4,
    ...extra,
  };
}

async function host(name: string, extra: Partial<NvmeControllerOptions> = {}): Promise<NvmeTestHost> {
  const h = await NvmeTestHost.start(options(name, extra));
  cleanups.push(() => h.stop());
  return h;
}

/** A controller that is not served (it only loads and saves). */
function bare(name: string, extra: Partial<NvmeControllerOptions> = {}): NvmeController {
  const c = new NvmeController(options(name, extra));
  cleanups.push(() => c.close());
  return c;
}

/** The device section of an envelope: its header (kind, version, checksum) and value. */
function deviceSection(bytes: Uint8Array): { kind: string; version: number; header: Uint8Array; value: Uint8Array } {
  const dev = decodeEnvelope(bytes, TAGS, 1 << 30).get('DEV ')!;
  const n = dev[0]!;
  const kind = String.fromCharCode(...dev.subarray(1, 1 + n));
  const version = new DataView(dev.buffer, dev.byteOffset + 1 + n, 4).getUint32(0, true);
  return { kind, version, header: dev.slice(0, 1 + n + 8), value: dev.subarray(1 + n + 8) };
}

function decodeState(bytes: Uint8Array): NvmeSavedState {
  return decodeField(nvmeStateFields, deviceSection(bytes).value);
}

/** `bytes` with its device section's value replaced by `state` (and its version by `version`). */
function withState(bytes: Uint8Array, state: NvmeSavedState, version?: number): Uint8Array {
  const sections = decodeEnvelope(bytes, TAGS, 1 << 30);
  const { header } = deviceSection(bytes);
  if (version !== undefined) new DataView(header.buffer).setUint32(header.length - 8, version, true);
  const value = encodeField(nvmeStateFields, state);
  const dev = new Uint8Array(header.length + value.length);
  dev.set(header);
  dev.set(value, header.length);
  sections.set('DEV ', dev);
  return encodeEnvelope([...sections.entries()]);
}

async function setFeature(g: NvmeGuest, fid: number, value: number): Promise<Cqe> {
  return expectOk(await g.admin({ opcode: 0x09, cdw10: fid, cdw11: value }));
}

/** A controller with everything a state holds set to something other than its default. */
async function busyController(): Promise<NvmeTestHost> {
  const g = await host('source');
  await g.enable();
  await setFeature(g, 0x01, 0x03020103); // arbitration
  await setFeature(g, 0x04, 0x0160); // over-temperature threshold
  await setFeature(g, 0x05, 0x1234); // error recovery
  await setFeature(g, 0x06, 0); // volatile write cache off
  await setFeature(g, 0x07, 0x00020002); // 3 I/O queue pairs
  await setFeature(g, 0x08, 0x0a05); // coalescing: 6 entries or 1 ms
  await setFeature(g, 0x09, (1 << 16) | 2); // coalescing off for vector 2
  await setFeature(g, 0x0a, 1); // write atomicity
  await setFeature(g, 0x0b, 0x100); // async event config
  await g.createQueuePair({ qid: 1, sqAt: sqAt(1), cqAt: cqAt(1), sqSize: 64, cqSize: 64, vector: 1 });
  await g.createQueuePair({ qid: 2, sqAt: sqAt(2), cqAt: cqAt(2), sqSize: 32, cqSize: 16, vector: 2 });
  await g.createQueuePair({ qid: 3, sqAt: sqAt(3), cqAt: cqAt(3), sqSize: 8, cqSize: 8, vector: 2, ien: false });
  expectOk(await g.enableShadowDoorbells());
  for (const qid of [1, 2, 3]) {
    for (let i = 0; i < qid + 2; i++) {
      g.mem.fill(qid * 16 + i, Layout.DATA, Layout.DATA + 4096);
      expectOk(await g.submit(qid, g.rw(1, 1, qid * 64 + i * 8, 8, gpa(Layout.DATA))));
    }
  }
  // Two Async Event Requests stay outstanding.
  g.place(0, { opcode: 0x0c });
  g.place(0, { opcode: 0x0c });
  await g.ring(0);
  await g.setReg(0x0c, 1); // INTMS
  await g.reg(0x1c); // the posted writes are in
  return g;
}

describe('NVMe saved state', () => {
  it('round-trips every field: a controller that loads a state saves the same bytes', async () => {
    const a = await busyController();
    await a.nvme.device.quiesce();
    const bytes = await a.nvme.device.saveState();
    const { kind, version } = deviceSection(bytes);
    expect(kind).toBe(NVME_STATE_KIND);
    expect(version).toBe(1);
    const s = decodeState(bytes);
    expect(s.registers).toMatchObject({ cc: (6 << 16) | (4 << 20) | 1, csts: 1, aqa: 0x003f003f, intms: 1 });
    expect(s.registers.asq).toBe(gpa(Layout.ADMIN_SQ));
    expect(s.features).toEqual({
      arbitration: 0x03020103,
      powerState: 0,
      overTemp: 0x160,
      underTemp: 0,
      errorRecovery: 0x1234,
      volatileWriteCache: false,
      grantedQueues: 3,
      coalesceThreshold: 5,
      coalesceTime: 10,
      coalesceDisabled: [2],
      writeAtomicity: 1,
      asyncEventConfig: 0x100,
    });
    expect(s.submissionQueues.map((q) => [q.id, q.size, q.cqid, q.head, q.tail])).toEqual([
      [0, 64, 0, 18, 18], // 9 Set Features, 6 creates, Doorbell Buffer Config, 2 AERs
      [1, 64, 1, 3, 3],
      [2, 32, 2, 4, 4],
      [3, 8, 3, 5, 5],
    ]);
    expect(s.completionQueues.map((q) => [q.id, q.size, q.iv, q.ien, q.tail, q.phase])).toEqual([
      [0, 64, 0, true, 16, 1],
      [1, 64, 1, true, 3, 1],
      [2, 16, 2, true, 4, 1],
      [3, 8, 2, false, 5, 1],
    ]);
    expect(s.shadowDoorbells).toEqual({ dbs: gpa(Layout.SHADOW_DB), eis: gpa(Layout.EVENT_IDX) });
    expect(s.asyncEvents.requests).toHaveLength(2);
    expect(s.namespaces).toEqual([{ nsid: 1, blocks: BigInt((16 << 20) / 512), lbaSize: 512 }]);
    expect(s.health.writeCommands).toBe(12n);
    expect(s.ioQueuesCreated).toBe(true);

    const b = bare('destination');
    await b.device.quiesce();
    await b.device.loadState(bytes);
    expect(Buffer.from(await b.device.saveState()).equals(Buffer.from(bytes))).toBe(true);
    await a.nvme.device.resume();
  });

  it('refuses what this controller cannot run, naming it, and keeps what it had', async () => {
    const a = await busyController();
    await a.nvme.device.quiesce();
    const bytes = await a.nvme.device.saveState();
    const good = decodeState(bytes);
    const b = bare('destination');
    await b.device.quiesce();
    const before = await b.device.saveState();
    const variant = (change: (s: NvmeSavedState) => void): Uint8Array => {
      const s = decodeState(bytes);
      change(s);
      return withState(bytes, s);
    };
    const refusals: [string, Uint8Array, RegExp][] = [
      [
        'a vector past the MSI-X table',
        variant((s) => (s.completionQueues[1]!.iv = 5)),
        /CQ 1: vector 5, this controller has 5 MSI-X vectors/,
      ],
      ['a queue too large', variant((s) => (s.submissionQueues[1]!.size = 2048)), /SQ 1: size 2048/],
      [
        'a queue id past the queues granted',
        variant((s) => (s.completionQueues[3]!.id = 4)),
        /CQ 4: queue id above the 3 I\/O queues/,
      ],
      [
        'an unaligned queue',
        variant((s) => (s.completionQueues[2]!.base += 0x10n)),
        /CQ 2 base 0x[0-9a-f]+ is not a page-aligned address/,
      ],
      [
        'a queue wrapping the address space',
        variant((s) => {
          s.submissionQueues[1]!.base = 0xffff_ffff_ffff_f000n;
          s.submissionQueues[1]!.size = 128;
        }),
        /SQ 1 at 0xfffffffffffff000 runs past the end/,
      ],
      [
        'a head past the queue',
        variant((s) => (s.submissionQueues[3]!.tail = 8)),
        /SQ 3: head 5 \/ tail 8 past its size 8/,
      ],
      [
        'an SQ bound to no CQ',
        variant((s) => (s.submissionQueues[2]!.cqid = 7)),
        /SQ 2 is bound to CQ 7, which does not exist/,
      ],
      [
        'a parked completion of an SQ not bound to its CQ',
        variant((s) =>
          s.completionQueues[1]!.parked.push({ sqid: 2, cid: 9, status: 0, result: 0, sqhd: 0, counted: true }),
        ),
        /CQ 1: a parked completion of SQ 2, which is not bound to it/,
      ],
      [
        'more queues granted than this controller has',
        variant((s) => (s.features.grantedQueues = 9)),
        /9 I\/O queues granted, this controller has 4/,
      ],
      ['CSTS.RDY without CC.EN', variant((s) => (s.registers.cc &= ~1)), /CC.EN clear with CSTS.RDY set/],
      [
        'admin queues elsewhere than ASQ',
        variant((s) => (s.registers.asq += 0x1000n)),
        /admin queues at 0x[0-9a-f]+ \/ 0x[0-9a-f]+, ASQ \/ ACQ say/,
      ],
      [
        'the same page for both shadow buffers',
        variant((s) => (s.shadowDoorbells!.eis = s.shadowDoorbells!.dbs)),
        /same page/,
      ],
      [
        'other namespaces',
        variant((s) => (s.namespaces[0]!.blocks = 1n)),
        /namespaces \(nsid:blocks x block size\) 1:1x512, this controller has 1:32768x512/,
      ],
      [
        'a newer version',
        withState(bytes, good, 2),
        /state of 'nvme-controller' is version 2, newer than this module's version 1/,
      ],
      [
        'an older version it does not read',
        withState(bytes, good, 0),
        /state of 'nvme-controller' is version 0, which this module \(version 1\) no longer reads/,
      ],
    ];
    for (const [what, state, message] of refusals) {
      const err = await b.device.loadState(state).then(
        () => new Error(`${what}: loaded`),
        (e: unknown) => e as Error,
      );
      expect(err, what).toBeInstanceOf(StateError);
      expect(err.message, what).toMatch(message);
      expect(Buffer.from(await b.device.saveState()).equals(Buffer.from(before)), `${what}: unchanged`).toBe(true);
    }
    // The unchanged state still loads.
    await b.device.loadState(withState(bytes, good));
    await a.nvme.device.resume();
  });
});

const QUEUES = 4;
const PER_QUEUE = 24;
/** Queue 4's CQ holds 7 entries: 17 of its 24 completions are parked at the quiesce. */
const SMALL_CQ = 8;

/** Data of command `i` (4 KiB, 8 blocks at LBA i * 8). */
function pattern(i: number): Uint8Array {
  const b = new Uint8Array(4096);
  for (let j = 0; j < b.length; j += 4) new DataView(b.buffer).setUint32(j, (i << 16) ^ j, true);
  return b;
}

/** Reap completions of queue `qid` until `want` arrived (each cid once), then make sure no other comes. */
async function reapAll(g: NvmeGuest, qid: number, want: Set<number>): Promise<Cqe[]> {
  const got: Cqe[] = [];
  while (got.length < want.size) got.push(await g.reap(qid, 5000));
  await new Promise((r) => setTimeout(r, 50));
  expect(g.peek(qid), `CQ ${qid}: an extra completion`).toBeUndefined();
  return got;
}

describe('NVMe quiesce under load', { timeout: 60_000 }, () => {
  it('96 writes in flight on 4 queues: completed or parked, nothing new fetched; after a load elsewhere each completes once', async () => {
    const a = await host('held', { pollAdaptive: false });
    await a.enable();
    await setFeature(a, 0x07, 0x00030003);
    await setFeature(a, 0x06, 0); // no volatile write cache: each write waits for its fdatasync (still running at the quiesce)
    for (let qid = 1; qid <= QUEUES; qid++)
      await a.createQueuePair({
        qid,
        sqAt: sqAt(qid),
        cqAt: cqAt(qid),
        sqSize: 64,
        cqSize: qid === QUEUES ? SMALL_CQ : 64,
      });
    expectOk(await a.enableShadowDoorbells());
    a.cqEventIdx = true; // queue 4's parked completions need the CQ head doorbells the controller asks for

    // 96 writes of 4 KiB, 24 per queue, each from its own buffer.
    const cids = new Map<number, Set<number>>();
    for (let qid = 1; qid <= QUEUES; qid++) {
      cids.set(qid, new Set());
      for (let k = 0; k < PER_QUEUE; k++) {
        const i = (qid - 1) * PER_QUEUE + k;
        a.mem.set(pattern(i), Layout.DATA + i * 4096);
        cids.get(qid)!.add(a.place(qid, a.rw(1, 1, i * 8, 8, gpa(Layout.DATA + i * 4096))));
      }
    }
    const fetched = (): number => a.nvme.queueStats().reduce((n, q) => n + (q.sqid === 0 ? 0 : q.fetched), 0);
    for (let qid = 1; qid <= QUEUES; qid++) await a.ring(qid);
    while (fetched() < QUEUES * PER_QUEUE) await new Promise((r) => setImmediate(r));
    const inflight = a.nvme.inflight;
    await a.nvme.device.quiesce();
    expect(inflight).toBeGreaterThan(0); // file writes on the thread pool when the quiesce began
    expect(a.nvme.inflight).toBe(0);

    // Held: a new command by MMIO doorbell (queue 1) and one by shadow tail only (queue 2) are not fetched.
    const late = [
      a.place(1, a.rw(1, 1, 96 * 8, 8, gpa(Layout.DATA + 96 * 4096))),
      a.place(2, a.rw(1, 1, 97 * 8, 8, gpa(Layout.DATA + 97 * 4096))),
    ];
    a.mem.set(pattern(96), Layout.DATA + 96 * 4096);
    a.mem.set(pattern(97), Layout.DATA + 97 * 4096);
    cids.get(1)!.add(late[0]!);
    cids.get(2)!.add(late[1]!);
    a.view.setUint32(Layout.SHADOW_DB + 2 * 1 * 4, a.tail(1), true);
    await a.setReg(0x1000 + 2 * 1 * 4, a.tail(1), true);
    a.view.setUint32(Layout.SHADOW_DB + 2 * 2 * 4, a.tail(2), true);
    await a.reg(0x1c);
    await new Promise((r) => setTimeout(r, 20));
    expect(fetched()).toBe(QUEUES * PER_QUEUE);

    const bytes = await a.nvme.device.saveState();
    const s = decodeState(bytes);
    const parked = s.completionQueues.find((q) => q.id === QUEUES)!.parked;
    expect(parked).toHaveLength(PER_QUEUE - (SMALL_CQ - 1));
    const written = s.completionQueues.reduce((n, q) => n + (q.id === 0 ? 0 : q.tail), 0);
    expect(written + parked.length).toBe(QUEUES * PER_QUEUE);
    expect(s.submissionQueues.find((q) => q.id === 1)!.tail).toBe(PER_QUEUE + 1);

    // Another controller takes the state, on the same guest memory (as a live upgrade does).
    const b = new NvmeController(options('taker'));
    const sock = tempSocketPath('nvme-taker');
    const server = await serve(b.device, { socketPath: sock.path });
    cleanups.push(async () => {
      await server.close();
      await b.close();
      sock.remove();
    });
    const client = await VfioUserClient.connect(sock.path);
    cleanups.push(() => client.close());
    await client.dmaMap({ addr: GPA, backing: a.guestMemory! });
    await client.enableIrqs(PciIrq.MSIX, QUEUES + 1);
    await b.device.quiesce();
    await b.device.loadState(bytes);
    await b.device.resume();
    const g = a.moveTo(client, a.mem, a.guestMemory);

    for (let qid = 1; qid <= QUEUES; qid++) {
      const got = await reapAll(g, qid, cids.get(qid)!);
      expect(got.every((c) => c.status === 0 && c.sqid === qid)).toBe(true);
      expect(new Set(got.map((c) => c.cid))).toEqual(cids.get(qid));
    }
    // Interrupts came on the destination for the queues it completed on.
    expect(client.irqCount(PciIrq.MSIX, QUEUES)).toBeGreaterThan(0);
    // Every write is on disk: read each block back through the new controller.
    for (let i = 0; i < QUEUES * PER_QUEUE + 2; i++) {
      expectOk(await g.submit(1, g.rw(2, 1, i * 8, 8, gpa(Layout.DATA2))));
      expect(
        Buffer.from(g.mem.subarray(Layout.DATA2, Layout.DATA2 + 4096)).equals(Buffer.from(pattern(i))),
        `LBA ${i * 8}`,
      ).toBe(true);
    }
  });
});
