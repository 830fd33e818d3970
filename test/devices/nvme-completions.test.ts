/**
 * The completion side of the NVMe controller on its own, over a plain byte
 * array standing in for guest memory: the queue table (queue-table.ts),
 * completion posting (cq-writer.ts: phase tag, a full CQ, shadow CQ heads,
 * fd-less memory, the per-SQ accounting that stops an SQ whose CQ is full)
 * and Async Event Requests (async-events.ts).
 */
import { describe, expect, it } from 'vitest';
import { AsyncEvents } from '../../devices/nvme/async-events.js';
import { CqInterrupts } from '../../devices/nvme/cq-interrupts.js';
import { CqWriter } from '../../devices/nvme/cq-writer.js';
import { defaultFeatures } from '../../devices/nvme/features.js';
import type { NvmeDma, NvmeHost } from '../../devices/nvme/host.js';
import { QueueTable } from '../../devices/nvme/queue-table.js';
import { cqSlot, ShadowDoorbells } from '../../devices/nvme/shadow-doorbells.js';
import { LogLimiter } from '../../server/log-limiter.js';
import { silentLogger } from '../../server/log.js';

const BASE = 0x1_0000_0000n;
const SQ_AT = 0x0000;
const CQ_AT = 0x1000;
const SHADOW_AT = 0x2000;
const EVENT_IDX_AT = 0x3000;

/** The parts over 64 KiB of "guest memory" at BASE; `mapped` false: no views, every access by (slow) message. */
function parts(mapped = true) {
  const bytes = new Uint8Array(64 << 10);
  const at = (addr: bigint, length: number): number => {
    if (addr < BASE || addr + BigInt(length) > BASE + BigInt(bytes.length))
      throw new Error(`0x${addr.toString(16)} not mapped`);
    return Number(addr - BASE);
  };
  const dma: NvmeDma = {
    view: (addr, length) =>
      mapped ? bytes.subarray(at(addr, length), at(addr, length) + length) : (at(addr, length), undefined),
    read: async (addr, length) => bytes.slice(at(addr, length), at(addr, length) + length),
    // A message takes a while: the entry lands after a timer.
    write: (addr, data) =>
      new Promise((resolve) =>
        setTimeout(() => {
          bytes.set(data, at(addr, data.length));
          resolve();
        }, 5),
      ),
  };
  const interrupts: number[] = [];
  const host: NvmeHost = { dma, msixEnabled: () => true, interrupt: (vector) => void interrupts.push(vector) };
  const fatal: string[] = [];
  /** SQs told they may fetch again (CqWriter's `room`). */
  const resumed: number[] = [];
  let shadow: ShadowDoorbells | undefined;
  const queues = new QueueTable(() => shadow);
  const writer = new CqWriter(
    dma,
    new CqInterrupts(host, defaultFeatures, new LogLimiter(silentLogger)),
    () => shadow,
    (what) => void fatal.push(what),
    (sq) => {
      sq.throttled = false;
      resumed.push(sq.id);
    },
  );
  const events = new AsyncEvents(writer);
  const dv = new DataView(bytes.buffer);
  /** The completion entry in CQ slot `slot`. */
  const entry = (slot: number) => {
    const o = CQ_AT + slot * 16;
    const dw3 = dv.getUint32(o + 12, true);
    return {
      result: dv.getUint32(o, true),
      sqhd: dv.getUint16(o + 8, true),
      sqid: dv.getUint16(o + 10, true),
      cid: dw3 & 0xffff,
      phase: (dw3 >>> 16) & 1,
      status: dw3 >>> 17,
    };
  };
  /** I/O queue pair 1 of `size` entries on vector 3. */
  const pair = (size: number) => {
    const cq = queues.createCq(1, BASE + BigInt(CQ_AT), size, 3, true);
    const sq = queues.createSq(1, BASE + BigInt(SQ_AT), size, cq);
    return { sq, cq };
  };
  const useShadow = (): ShadowDoorbells =>
    (shadow = ShadowDoorbells.open(dma, BASE + BigInt(SHADOW_AT), BASE + BigInt(EVENT_IDX_AT))!);
  return { bytes, dv, queues, writer, events, interrupts, fatal, resumed, entry, pair, useShadow };
}

describe('NVMe completions', () => {
  it('writes entries with the phase tag, flips it on every wrap, and interrupts once per turn', async () => {
    const { writer, interrupts, entry, pair } = parts();
    const { sq, cq } = pair(4);
    sq.head = 2;
    writer.post(sq, 7, 0, 0xabc);
    writer.post(sq, 8, 0x4002, 0);
    expect(entry(0)).toEqual({ result: 0xabc, sqhd: 2, sqid: 1, cid: 7, phase: 1, status: 0 });
    expect(entry(1)).toEqual({ result: 0, sqhd: 2, sqid: 1, cid: 8, phase: 1, status: 0x4002 });
    expect(interrupts).toEqual([]); // at the end of the turn, for both
    await Promise.resolve();
    expect(interrupts).toEqual([3]);
    writer.post(sq, 9, 0, 0);
    cq.head = 3; // the host consumed three entries
    writer.post(sq, 10, 0, 0); // slot 3: the tail wraps, the next lap is phase 0
    writer.post(sq, 11, 0, 0);
    expect([entry(3).cid, entry(3).phase, entry(0).cid, entry(0).phase]).toEqual([10, 1, 11, 0]);
  });

  it('keeps completions pending, in order, while the CQ is full, and posts them when the head moves', () => {
    const { writer, entry, pair } = parts();
    const { sq, cq } = pair(4);
    for (let cid = 1; cid <= 5; cid++) writer.post(sq, cid, 0, 0);
    expect(cq.pending.toArray().map((c) => c.cid)).toEqual([4, 5]); // 3 of 4 slots: one stays free
    cq.head = 2;
    writer.post(sq, 6, 0, 0); // there is room now, but not ahead of the pending ones
    expect(cq.pending.toArray().map((c) => c.cid)).toEqual([4, 5, 6]);
    writer.drainPending(cq);
    expect(cq.pending.toArray().map((c) => c.cid)).toEqual([6]); // full again: one slot stays free
    expect([entry(3).cid, entry(0).cid, entry(0).phase]).toEqual([4, 5, 0]);
  });

  it('with shadow doorbells, asks for the CQ head when full and takes it from the shadow slot', () => {
    const { dv, writer, entry, pair, useShadow } = parts();
    useShadow();
    const { sq, cq } = pair(4);
    for (let cid = 1; cid <= 4; cid++) writer.post(sq, cid, 0, 0);
    expect(cq.pending.toArray().map((c) => c.cid)).toEqual([4]);
    expect(dv.getUint32(EVENT_IDX_AT + cqSlot(1) * 4, true)).toBe(0); // "write the head doorbell past 0"
    dv.setUint32(SHADOW_AT + cqSlot(1) * 4, 2, true); // the host consumed two, shadow only
    writer.post(sq, 5, 0, 0); // still behind a pending one: queued in order
    writer.drainPending(cq);
    expect([cq.head, entry(3).cid, entry(0).cid, cq.pending.length]).toEqual([2, 4, 5, 0]);
  });

  it('with fd-less memory, sends the entry by message and interrupts only once it is written', async () => {
    const { writer, interrupts, entry, pair } = parts(false);
    const { sq } = pair(4);
    writer.post(sq, 7, 0, 0);
    await Promise.resolve();
    expect([entry(0).cid, interrupts.length]).toEqual([0, 0]);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect([entry(0).cid, entry(0).phase, interrupts]).toEqual([7, 1, [3]]);
  });

  it('drops completions for a deleted CQ; a reset deletes every queue at once', () => {
    const { queues, writer, entry, pair, fatal } = parts();
    const { sq, cq } = pair(4);
    queues.deleteCq(cq);
    writer.post(sq, 7, 0, 0);
    expect(entry(0).cid).toBe(0);
    const again = pair(4);
    queues.deleteAll();
    expect([queues.sq(1), queues.cq(1), again.sq.deleted, again.cq.deleted]).toEqual([
      undefined,
      undefined,
      true,
      true,
    ]);
    expect(fatal).toEqual([]);
  });

  it('a deleted SQ leaves the table and its CQ at once; the Delete resolves when its last command is done', async () => {
    const { queues, writer, entry, pair } = parts();
    const { sq, cq } = pair(4);
    sq.inflight = 1;
    let deleted = false;
    const deleting = queues.deleteSq(sq).then(() => (deleted = true));
    await Promise.resolve();
    expect([sq.deleted, deleted, cq.sqCount, queues.sq(1)]).toEqual([true, false, 0, undefined]);
    writer.post(sq, 7, 0, 0); // the last command finishes: aborted by the Delete, and there is room
    await deleting;
    expect(entry(0)).toMatchObject({ cid: 7, sqid: 1, status: 0x4008 }); // Aborted due to SQ Deletion
  });

  it('drops the completions of a deleted SQ still waiting for CQ room, and never posts them later', async () => {
    const { queues, writer, entry, pair } = parts();
    const { sq, cq } = pair(2); // one usable slot
    const other = queues.createSq(2, BASE + 0x8000n, 4, cq);
    sq.inflight = 3;
    other.inflight = 1;
    writer.post(sq, 1, 0, 0); // written
    writer.post(sq, 2, 0, 0); // waits
    writer.post(other, 9, 0, 0); // waits
    writer.post(sq, 3, 0, 0); // waits
    expect(cq.pending.toArray().map((c) => c.cid)).toEqual([2, 9, 3]);
    await queues.deleteSq(sq); // nothing of it runs: done at once
    expect([sq.inflight, cq.pending.toArray().map((c) => c.cid)]).toEqual([0, [9]]);
    cq.head = 1; // the host consumed the entry
    writer.drainPending(cq);
    expect([entry(1).cid, entry(1).sqid, cq.pending.length]).toEqual([9, 2, 0]);
  });

  it('counts each command against its SQ until its entry is written, and resumes an SQ paused at its size', () => {
    const { writer, resumed, pair } = parts();
    const { sq, cq } = pair(2);
    sq.inflight = 2; // the size: the engine paused it
    sq.throttled = true;
    writer.post(sq, 1, 0, 0); // written: one slot of the SQ's budget back
    expect([sq.inflight, resumed]).toEqual([1, [1]]);
    sq.throttled = true;
    writer.post(sq, 2, 0, 0); // the CQ is full: still counted
    expect([sq.inflight, resumed]).toEqual([1, [1]]);
    cq.head = 1;
    writer.drainPending(cq);
    expect([sq.inflight, resumed]).toEqual([0, [1, 1]]);
  });
});

describe('NVMe async events', () => {
  it('holds up to four requests and completes the oldest with each event; an early event waits for a request', () => {
    const { events, entry, pair } = parts();
    const { sq } = pair(8);
    for (let cid = 1; cid <= 4; cid++) expect(events.request(sq, cid)).toBe(true);
    expect(events.request(sq, 5)).toBe(false); // Async Event Request Limit Exceeded
    events.raise(0x00020004);
    expect(entry(0)).toMatchObject({ cid: 1, result: 0x00020004, status: 0 });
    events.clear(); // a reset
    events.raise(0x00010002);
    expect(entry(1).cid).toBe(0);
    events.request(sq, 9);
    expect(entry(1)).toMatchObject({ cid: 9, result: 0x00010002 });
  });
});
