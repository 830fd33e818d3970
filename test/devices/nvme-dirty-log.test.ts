/**
 * Dirty-page logging under the NVMe controller: the bitmap the client gets
 * from DMA_LOGGING_REPORT covers every page the controller wrote while
 * logging was on (completion entries, read data through pinned views, an
 * Identify copied through a view, EventIdx stores into the shadow page),
 * and reports none of the pages it only read (SQ rings, write buffers).
 * The queues and the shadow pages were set up before logging started: the
 * controller writes them through views it cached then, which the DMA space
 * cannot see; the controller marks those writes itself.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { expectOk, GPA, Layout, NvmeTestHost } from './nvme-driver.js';

const gpa = (off: number): bigint => GPA + BigInt(off);
const PAGE = 4096;
const MEM_SIZE = 8 << 20;
const QSIZE = 64;
const sqAt = (qid: number): number => 0x8000 + (qid - 1) * 0x2000;
const cqAt = (qid: number): number => sqAt(qid) + 0x1000;
/** Reads land on every other page of DATA2; writes come from every other page of DATA. */
const readBuf = (i: number): number => Layout.DATA2 + i * 2 * PAGE;
const writeBuf = (i: number): number => Layout.DATA + i * 2 * PAGE;
const IDENTIFY_AT = Layout.DATA2 + 0x8_0000;
const READS = 16;
const WRITES = 8;

let dir: TempDir;
let h: NvmeTestHost;

beforeEach(async () => {
  dir = tempDir('nvme-dirty-');
  h = await NvmeTestHost.start({
    name: 'nvme-dirty',
    namespaces: [{ path: dir.file('ns1.img'), size: 16 << 20, lbaSize: 512 }],
    queues: 2,
    pollAdaptive: false, // polling on: EventIdx stores while I/O flows
  });
});
afterEach(async () => {
  await h.stop();
  dir.remove();
});

/** Page indexes (from GPA) of [at, at + length). */
function pagesOf(at: number, length: number): number[] {
  const out: number[] = [];
  for (let p = Math.floor(at / PAGE); p * PAGE < at + length; p++) out.push(p);
  return out;
}

describe('NVMe dirty-page logging', () => {
  it('the bitmap covers every page the controller wrote and none it only read', async () => {
    await h.enable();
    expectOk(await h.admin({ opcode: 0x09, cdw10: 0x07, cdw11: 0x00010001 }));
    for (const qid of [1, 2])
      await h.createQueuePair({ qid, sqAt: sqAt(qid), cqAt: cqAt(qid), sqSize: QSIZE, cqSize: QSIZE });
    expectOk(await h.enableShadowDoorbells());
    // Data to read back later.
    for (let i = 0; i < READS; i++) {
      h.mem.fill(i + 1, writeBuf(0), writeBuf(0) + PAGE);
      expectOk(await h.submit(1, h.rw(1, 1, i * 8, 8, gpa(writeBuf(0)))));
    }

    const pageSize = await h.client.startDirtyLogging({ pageSize: BigInt(PAGE) });
    expect(pageSize).toBe(BigInt(PAGE));
    await h.client.dirtyBitmap(GPA, BigInt(MEM_SIZE), BigInt(PAGE)); // start from a clean bitmap

    // The guest's part first: entries, write data, shadow tails. Then the memory as it was before the controller acts.
    for (let i = 0; i < READS; i++) {
      h.mem.fill(0, readBuf(i), readBuf(i) + PAGE);
      h.place(i % 2 === 0 ? 1 : 2, h.rw(2, 1, i * 8, 8, gpa(readBuf(i))));
    }
    for (let i = 0; i < WRITES; i++) {
      h.mem.fill(0x80 + i, writeBuf(i), writeBuf(i) + PAGE);
      h.place(i % 2 === 0 ? 1 : 2, h.rw(1, 1, 1024 + i * 8, 8, gpa(writeBuf(i))));
    }
    h.place(0, { opcode: 0x06, prp1: gpa(IDENTIFY_AT), cdw10: 1 });
    h.mem.fill(0xee, IDENTIFY_AT, IDENTIFY_AT + PAGE);
    const slots = (qid: number): number => Layout.SHADOW_DB + 2 * qid * 4;
    h.view.setUint32(slots(1), h.tail(1), true);
    h.view.setUint32(slots(2), h.tail(2), true);
    const before = h.mem.slice();
    await h.setReg(0x1000 + 2 * 1 * 4, h.tail(1), true);
    await h.setReg(0x1000 + 2 * 2 * 4, h.tail(2), true);
    await h.setReg(0x1000, h.tail(0), true);

    // Wait for every completion without touching guest memory (peeking writes nothing).
    const expected = { 0: 1, 1: READS / 2 + WRITES / 2, 2: READS / 2 + WRITES / 2 } as Record<number, number>;
    const until = Date.now() + 5000;
    /** Entries with phase 1 in a CQ (none has wrapped: fewer than QSIZE entries each). */
    const seen = (qid: number): number => {
      let n = 0;
      const v = h.view;
      const at = qid === 0 ? Layout.ADMIN_CQ : cqAt(qid);
      for (let i = 0; i < QSIZE; i++) if ((v.getUint16(at + i * 16 + 14, true) & 1) === 1) n++;
      return n;
    };
    const cqBefore = { 0: seen(0), 1: seen(1), 2: seen(2) } as Record<number, number>;
    while ([0, 1, 2].some((q) => seen(q) - cqBefore[q]! < expected[q]!)) {
      if (Date.now() > until) throw new Error('completions did not arrive');
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 20)); // the EventIdx stores after the last completion
    const after = h.mem.slice();
    const report = await h.client.dirtyBitmap(GPA, BigInt(MEM_SIZE), BigInt(PAGE));
    const reported = new Set(report.dirtyPages());

    // Every page that changed was reported.
    const changed: number[] = [];
    for (let p = 0; p < MEM_SIZE / PAGE; p++) {
      if (
        !Buffer.from(before.subarray(p * PAGE, (p + 1) * PAGE)).equals(
          Buffer.from(after.subarray(p * PAGE, (p + 1) * PAGE)),
        )
      )
        changed.push(p);
    }
    expect(changed.length).toBeGreaterThanOrEqual(READS + 3 + 1); // read buffers, 3 CQs, the Identify page
    expect(changed).toContain(Layout.EVENT_IDX / PAGE);
    expect(changed.filter((p) => !reported.has(p))).toEqual([]);

    // And nothing the controller only read: SQ rings, the shadow doorbell page, the write buffers.
    const readOnly = [
      ...pagesOf(Layout.ADMIN_SQ, PAGE),
      ...pagesOf(sqAt(1), PAGE),
      ...pagesOf(sqAt(2), PAGE),
      ...pagesOf(Layout.SHADOW_DB, PAGE),
      ...Array.from({ length: WRITES }, (_, i) => pagesOf(writeBuf(i), PAGE)).flat(),
    ];
    expect(readOnly.filter((p) => reported.has(p))).toEqual([]);
    // What was reported is what the controller may write: CQs, EventIdx, read buffers, the Identify page.
    const writable = new Set([
      ...pagesOf(Layout.ADMIN_CQ, PAGE),
      ...pagesOf(cqAt(1), PAGE),
      ...pagesOf(cqAt(2), PAGE),
      ...pagesOf(Layout.EVENT_IDX, PAGE),
      ...Array.from({ length: READS }, (_, i) => pagesOf(readBuf(i), PAGE)).flat(),
      ...pagesOf(IDENTIFY_AT, PAGE),
    ]);
    expect([...reported].filter((p) => !writable.has(p))).toEqual([]);
    await h.client.stopDirtyLogging();
  });
});
