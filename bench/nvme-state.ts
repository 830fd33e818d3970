/**
 * The NVMe controller's saved state: its size for 1, 4, 16 and 64 I/O queue
 * pairs (every queue created, shadow doorbells on), and how long quiesce
 * ('hold') takes with 96 writes of 4 KiB in flight on four queues (file
 * namespace; volatile write cache on, so the time is the commands' own
 * plus the flush the hold makes).
 *
 *   npx tsx bench/nvme-state.ts [--rounds 20]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { decodeEnvelope } from '../server/state/envelope.js';
import { expectOk, GPA, Layout, NvmeTestHost } from '../test/devices/nvme-driver.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '20' } } });
const rounds = Number(values.rounds);
const dir = mkdtempSync(join(tmpdir(), 'nvme-state-bench-'));
const gpa = (off: number): bigint => GPA + BigInt(off);
/** Queue pair qid: SQ (64 entries) and CQ pages from 4 MiB on. */
const sqAt = (qid: number): number => 0x40_0000 + (qid - 1) * 0x2000;
const cqAt = (qid: number): number => sqAt(qid) + 0x1000;

async function controller(queues: number, name: string): Promise<NvmeTestHost> {
  const h = await NvmeTestHost.start({
    name,
    namespaces: [{ path: join(dir, `${name}.img`), size: 64 << 20, lbaSize: 512 }],
    queues,
  });
  await h.enable();
  expectOk(await h.admin({ opcode: 0x09, cdw10: 0x07, cdw11: ((queues - 1) << 16) | (queues - 1) }));
  for (let qid = 1; qid <= queues; qid++)
    await h.createQueuePair({ qid, sqAt: sqAt(qid), cqAt: cqAt(qid), sqSize: 64, cqSize: 64, vector: qid });
  expectOk(await h.enableShadowDoorbells());
  return h;
}

/** The whole saved state (envelope) and its NVMe part (the DEV section). */
async function stateSize(queues: number): Promise<{ queues: number; bytes: number; nvmeBytes: number }> {
  const h = await controller(queues, `size${queues}`);
  try {
    await h.nvme.device.quiesce();
    const state = await h.nvme.device.saveState();
    await h.nvme.device.resume();
    const dev = decodeEnvelope(state, ['PCI ', 'BARM', 'DEV '], 1 << 30).get('DEV ')!;
    return { queues, bytes: state.byteLength, nvmeBytes: dev.byteLength };
  } finally {
    await h.stop();
  }
}

async function quiesceTimes(): Promise<number[]> {
  const h = await controller(4, 'quiesce');
  const times: number[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      const fetched = (): number => h.nvme.queueStats().reduce((n, q) => n + (q.sqid === 0 ? 0 : q.fetched), 0);
      const start = fetched();
      for (let i = 0; i < 96; i++) {
        const qid = (i % 4) + 1;
        h.mem.fill(i, Layout.DATA + i * 4096, Layout.DATA + (i + 1) * 4096);
        h.place(qid, h.rw(1, 1, (r * 96 + i) * 8, 8, gpa(Layout.DATA + i * 4096)));
      }
      for (let qid = 1; qid <= 4; qid++) await h.ring(qid);
      while (fetched() < start + 96) await new Promise((r) => setImmediate(r));
      const t0 = performance.now();
      await h.nvme.device.quiesce();
      times.push(performance.now() - t0);
      await h.nvme.device.resume();
      for (let i = 0; i < 96; i++) await h.reap((i % 4) + 1);
    }
  } finally {
    await h.stop();
  }
  return times.sort((a, b) => a - b);
}

try {
  for (const q of [1, 4, 16, 64]) console.log(JSON.stringify(await stateSize(q)));
  const t = await quiesceTimes();
  const ms = (v: number): number => Math.round(v * 1000) / 1000;
  console.log(
    JSON.stringify({
      quiesceMs: { rounds: t.length, min: ms(t[0]!), median: ms(t[t.length >> 1]!), max: ms(t[t.length - 1]!) },
    }),
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
