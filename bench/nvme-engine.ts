/**
 * NVMe engine cost, no QEMU: our NVMe controller in a child process (so only
 * its CPU is counted), driven by our TypeScript client (client/) acting as a
 * polling guest driver on shared memory (a memfd DMA region, as QEMU's guest
 * RAM is): shadow doorbells with EventIdx like Linux's driver, I/O queues
 * created without interrupts (the driver polls the completion queues' phase
 * tags), `qd` commands kept in flight on EACH of `queues` I/O queues.
 *
 * Rows: 4 KiB reads at random 4 KiB offsets of a 64 MiB file that is in the
 * page cache (read once before), at QD 1/32/128 x 1 and 4 I/O queues; and the
 * floor: Flush with nothing dirty (a command that does no I/O and moves no
 * data: fetch, decode, dispatch, CQE), at the same depths.
 *
 * Per row: IOPS (client wall clock) and the server's CPU per command
 * (process.cpuUsage() of the server process over the timed window, divided
 * by the commands completed in it). Each row runs twice: with the
 * controller's default shadow-doorbell polling (it spins the event loop in
 * the gaps, so its CPU includes spinning: `spin_us` is the wall time the
 * poller spun, per command) and with polling off (`pollMicros: 0`: every
 * submission comes by a doorbell message, and the CPU is the work alone).
 *
 * Standalone: `npx tsx bench/nvme-engine.ts` (NVME_ENGINE_MS=ms per row,
 * NVME_BENCH_LOADED=1 adds the loaded pass, NVME_ENGINE_CPU_PROF=DIR writes a
 * V8 CPU profile of every server).
 *
 * Child mode: `tsx bench/nvme-engine.ts --serve <socket> <image>` serves the
 * controller and answers IPC 'stats' with its CPU and poller figures.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { VfioUserClient } from '../client/index.js';
import { PciIrq } from '../protocol/constants.js';
import { hostLine, loadAverage, startCpuHogs } from './nvme.js';

const self = fileURLToPath(import.meta.url);

/** Guest-physical base of the DMA region (above 4 GiB, as in the tests). */
const GPA = 0x1_0000_0000n;
const PAGE = 4096;
const IMAGE_MIB = 64;
/** Entries per I/O queue (room for QD 128 plus the one empty slot). */
const QSIZE = 256;
const MAX_QUEUES = 4;
const MAX_QD = 128;

/** Guest memory layout (offsets). Admin rings, shadow pages, then per-queue rings and data buffers. */
const L = {
  ADMIN_SQ: 0x0000,
  ADMIN_CQ: 0x1000,
  SHADOW_DB: 0x2000,
  EVENT_IDX: 0x3000,
  /** Identify and other admin data. */
  SCRATCH: 0x4000,
  /** Queue q's SQ at RINGS + q * 0x2_0000 (16 KiB SQ, then its 4 KiB CQ). */
  RINGS: 0x10_0000,
  /** Queue q's buffers at DATA + (q * MAX_QD + slot) * PAGE. */
  DATA: 0x20_0000,
} as const;
const MEM_SIZE = L.DATA + MAX_QUEUES * MAX_QD * PAGE;

export interface EngineRow {
  bench: string;
  variant: string;
  queues: number;
  qd: number;
  iops: number;
  /** Server CPU per completed command, microseconds. */
  cpu_us: number;
  /** Wall time the poller spun, per command (part of cpu_us when the process was on a CPU). */
  spin_us: number;
  /** Doorbell messages per command. */
  mmio_per_cmd: number;
  load: number;
}

interface ServerStats {
  user: number;
  system: number;
  spinMicros: number;
  polled: number;
  mmio: number;
}

interface Queue {
  qid: number;
  sq: number;
  cq: number;
  tail: number;
  head: number;
  phase: number;
  /** Slot (data buffer) of each cid; cids are slot numbers. */
  inFlight: number;
}

/** A minimal polling NVMe driver on shared memory (what a SPDK-style user-space driver does). */
class PollingDriver {
  private readonly v: DataView;
  /** The shadow doorbell and EventIdx pages as dwords (slot 2y: SQ y tail, 2y + 1: CQ y head). */
  private readonly db: Int32Array;
  private readonly ei: Int32Array;
  private adminTail = 0;
  private adminHead = 0;
  private adminPhase = 1;
  private nextCid = 1;

  private constructor(
    readonly client: VfioUserClient,
    readonly mem: Uint8Array,
  ) {
    this.v = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
    this.db = new Int32Array(mem.buffer, mem.byteOffset + L.SHADOW_DB, PAGE / 4);
    this.ei = new Int32Array(mem.buffer, mem.byteOffset + L.EVENT_IDX, PAGE / 4);
  }

  static async connect(socketPath: string): Promise<PollingDriver> {
    const client = await VfioUserClient.connect(socketPath);
    const g = client.createGuestMemory(MEM_SIZE);
    await client.dmaMap({ addr: GPA, backing: g });
    await client.enableIrqs(PciIrq.MSIX, 1);
    await client.cfgWrite16(0x04, 0x6); // memory decoding + bus mastering
    return new PollingDriver(client, g.bytes);
  }

  private async setReg(offset: number, value: number, posted = false): Promise<void> {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value >>> 0, true);
    await this.client.regionWrite(0, offset, b, { posted });
  }

  private async reg(offset: number): Promise<number> {
    const b = await this.client.regionRead(0, offset, 4);
    return new DataView(b.buffer, b.byteOffset).getUint32(0, true);
  }

  async enable(): Promise<void> {
    await this.setReg(0x24, (63 << 16) | 63);
    const asq = GPA + BigInt(L.ADMIN_SQ);
    const acq = GPA + BigInt(L.ADMIN_CQ);
    await this.setReg(0x28, Number(asq & 0xffffffffn));
    await this.setReg(0x2c, Number(asq >> 32n));
    await this.setReg(0x30, Number(acq & 0xffffffffn));
    await this.setReg(0x34, Number(acq >> 32n));
    await this.setReg(0x14, (6 << 16) | (4 << 20) | 1);
    for (let i = 0; !((await this.reg(0x1c)) & 1); i++) {
      if (i > 2500) throw new Error('controller not ready');
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  private writeSqe(at: number, opcode: number, cid: number, nsid: number, prp1: bigint, cdw: number[]): void {
    this.mem.fill(0, at, at + 64);
    this.v.setUint32(at, (opcode | (cid << 16)) >>> 0, true);
    this.v.setUint32(at + 4, nsid, true);
    this.v.setBigUint64(at + 24, prp1, true);
    cdw.forEach((d, i) => this.v.setUint32(at + 40 + 4 * i, d >>> 0, true));
  }

  /** One admin command, waited for; throws on an error status. */
  async admin(opcode: number, prp1: bigint, cdw: number[], prp2 = 0n): Promise<void> {
    const cid = (this.nextCid = (this.nextCid + 1) & 0xffff);
    const at = L.ADMIN_SQ + this.adminTail * 64;
    this.writeSqe(at, opcode, cid, 0, prp1, cdw);
    this.v.setBigUint64(at + 32, prp2, true);
    this.adminTail = (this.adminTail + 1) % 64;
    await this.setReg(0x1000, this.adminTail, true);
    const o = L.ADMIN_CQ + this.adminHead * 16;
    const until = Date.now() + 5000;
    while ((this.v.getUint16(o + 14, true) & 1) !== this.adminPhase) {
      if (Date.now() > until) throw new Error(`admin opcode ${opcode}: no completion`);
      await new Promise((r) => setTimeout(r, 1));
    }
    const status = this.v.getUint32(o + 12, true) >>> 17;
    this.adminHead = (this.adminHead + 1) % 64;
    if (this.adminHead === 0) this.adminPhase ^= 1;
    await this.setReg(0x1004, this.adminHead, true);
    if (status !== 0) throw new Error(`admin opcode 0x${opcode.toString(16)}: status 0x${status.toString(16)}`);
  }

  /** Set Features Number of Queues, Doorbell Buffer Config, then `n` CQ/SQ pairs without interrupts. */
  async createQueues(n: number): Promise<Queue[]> {
    await this.admin(0x09, 0n, [0x07, ((n - 1) << 16) | (n - 1)]);
    await this.admin(0x7c, GPA + BigInt(L.SHADOW_DB), [], GPA + BigInt(L.EVENT_IDX));
    const queues: Queue[] = [];
    for (let qid = 1; qid <= n; qid++) {
      const sq = L.RINGS + (qid - 1) * 0x2_0000;
      const cq = sq + QSIZE * 64;
      this.mem.fill(0, cq, cq + QSIZE * 16);
      await this.admin(0x05, GPA + BigInt(cq), [((QSIZE - 1) << 16) | qid, 1]); // PC, no IEN
      await this.admin(0x01, GPA + BigInt(sq), [((QSIZE - 1) << 16) | qid, (qid << 16) | 1]);
      queues.push({ qid, sq, cq, tail: 0, head: 0, phase: 1, inFlight: 0 });
    }
    return queues;
  }

  /** Place one command on `q` in its slot's buffer (cid = slot). */
  place(q: Queue, slot: number, opcode: number, slba: number): void {
    const buf = GPA + BigInt(L.DATA + ((q.qid - 1) * MAX_QD + slot) * PAGE);
    // Read: 8 x 512-byte LBAs (cdw12 = NLB - 1); Flush: no data, no fields.
    const cdw = opcode === 0x02 ? [slba, 0, 7] : [];
    this.writeSqe(q.sq + q.tail * 64, opcode, slot, 1, opcode === 0x02 ? buf : 0n, cdw);
    q.tail = (q.tail + 1) % QSIZE;
    q.inFlight++;
  }

  /** Publish q's tail in the shadow doorbell; MMIO only when the controller's EventIdx asks (Linux's rule). */
  ring(q: Queue, oldTail: number): void {
    // Atomics: the tail store must be ordered before the EventIdx load (Linux's mb() here; x86 may
    // otherwise let the load pass the store, and with the controller's mirror-image check both miss).
    Atomics.store(this.db, 2 * q.qid, q.tail);
    const ei = Atomics.load(this.ei, 2 * q.qid) & 0xffff;
    if (((q.tail - ei - 1) & 0xffff) < ((q.tail - oldTail) & 0xffff))
      void this.setReg(0x1000 + 2 * q.qid * 4, q.tail, true);
  }

  /** Consume every completion on q's CQ; calls `done(slot)` for each. Returns how many. */
  reap(q: Queue, done: (slot: number) => void): number {
    let n = 0;
    for (;;) {
      const o = q.cq + q.head * 16;
      if ((this.v.getUint16(o + 14, true) & 1) !== q.phase) break;
      const dw3 = this.v.getUint32(o + 12, true);
      if (dw3 >>> 17 !== 0) throw new Error(`I/O status 0x${(dw3 >>> 17).toString(16)}`);
      q.head = (q.head + 1) % QSIZE;
      if (q.head === 0) q.phase ^= 1;
      q.inFlight--;
      n++;
      done(dw3 & 0xffff);
    }
    if (n) Atomics.store(this.db, 2 * q.qid + 1, q.head);
    return n;
  }

  close(): void {
    this.client.close();
  }
}

/** Ask the server child for its CPU and poller figures. */
function stats(child: ChildProcess): Promise<ServerStats> {
  return new Promise((resolve) => {
    child.once('message', (m) => resolve(m as ServerStats));
    child.send('stats');
  });
}

/** Keep `qd` commands in flight on each queue for `ms`; returns commands completed and seconds. */
async function drive(
  d: PollingDriver,
  queues: Queue[],
  qd: number,
  opcode: number,
  ms: number,
): Promise<{ commands: number; seconds: number }> {
  let seed = 12345;
  const blocks = (IMAGE_MIB << 20) / PAGE;
  const nextLba = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed % blocks) * 8;
  };
  for (const q of queues) {
    const old = q.tail;
    for (let s = 0; s < qd; s++) d.place(q, s, opcode, nextLba());
    d.ring(q, old);
  }
  let commands = 0;
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(ms) * 1_000_000n;
  let stopping = false;
  let idle = 0;
  for (;;) {
    let got = 0;
    for (const q of queues) {
      const old = q.tail;
      const n = d.reap(q, (slot) => {
        if (!stopping) d.place(q, slot, opcode, nextLba());
      });
      if (n && !stopping) d.ring(q, old);
      got += n;
    }
    commands += got;
    // Let the client's event loop run now and then (posted doorbell writes, socket events).
    if (got) idle = 0;
    else if (++idle % 256 === 0) await yieldToLoop();
    if (got && (commands & 1023) < got) {
      if (process.hrtime.bigint() >= end) stopping = true;
      await yieldToLoop();
    }
    if (stopping && queues.every((q) => q.inFlight === 0)) break;
    if (idle > 50_000_000) throw new Error('no completions for 50,000,000 polls');
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { commands, seconds };
}

function makeImage(path: string): void {
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  const fd = openSync(path, 'w');
  try {
    for (let i = 0; i < IMAGE_MIB; i++) writeSync(fd, chunk, 0, chunk.length, i * chunk.length);
  } finally {
    closeSync(fd);
  }
  readFileSync(path); // into the page cache
}

export interface EngineOptions {
  print?: boolean;
  /** Also run every row with two CPU-bound processes beside it. */
  loaded?: boolean;
  /** Milliseconds per row (default 3000). */
  ms?: number;
  depths?: number[];
  queueCounts?: number[];
}

/** The server's environment: 'no polling' turns the controller's polling off, 'polling' leaves its default. */
function serverEnv(poll: 'polling' | 'no polling'): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'warn' };
  if (poll === 'no polling') env.NVME_BENCH_POLL_US = '0';
  else delete env.NVME_BENCH_POLL_US;
  return env;
}

/** The commands measured: a 4 KiB read, and the floor (a command with no I/O and no data). */
const OPS = [
  ['4 KiB read (page cache)', 0x02],
  ['floor: Flush, nothing dirty', 0x00],
] as const;

interface RowSpec {
  sock: string;
  image: string;
  loaded: boolean;
  poll: 'polling' | 'no polling';
  nq: number;
  what: string;
  opcode: number;
  qd: number;
  ms: number;
}

/** One row: a fresh server (one connection, one controller enable, its own CPU counter), a warm-up, the timed window. */
async function measureRow(x: RowSpec): Promise<EngineRow> {
  // NVME_ENGINE_CPU_PROF=DIR: a V8 CPU profile of each server (what the engine's time goes to).
  const prof = process.env.NVME_ENGINE_CPU_PROF;
  const flags = prof ? ['--cpu-prof', '--cpu-prof-dir', prof] : [];
  const child = spawn(process.execPath, [...flags, '--import', 'tsx', self, '--serve', x.sock, x.image], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    env: serverEnv(x.poll),
  });
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (c) => reject(new Error(`server exited (${c})`)));
    });
    const d = await PollingDriver.connect(x.sock);
    try {
      await d.enable();
      const queues = await d.createQueues(x.nq);
      await drive(d, queues, x.qd, x.opcode, Math.min(500, x.ms)); // warm-up (JIT, poller window)
      const load = loadAverage();
      const s0 = await stats(child);
      const r = await drive(d, queues, x.qd, x.opcode, x.ms);
      const s1 = await stats(child);
      const cpu = s1.user + s1.system - s0.user - s0.system;
      return {
        bench: `nvme-engine (${x.loaded ? 'loaded' : 'quiet'})`,
        variant: `${x.what}, ${x.poll}, ${x.nq} queue${x.nq > 1 ? 's' : ''}, QD${x.qd}/queue`,
        queues: x.nq,
        qd: x.qd,
        iops: Math.round(r.commands / r.seconds),
        cpu_us: +(cpu / r.commands).toFixed(2),
        spin_us: +((s1.spinMicros - s0.spinMicros) / r.commands).toFixed(2),
        mmio_per_cmd: +((s1.mmio - s0.mmio) / r.commands).toFixed(3),
        load,
      };
    } finally {
      d.close();
    }
  } finally {
    await new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  }
}

export async function benchNvmeEngine(o: EngineOptions = {}): Promise<EngineRow[]> {
  const print = o.print ?? true;
  const ms = o.ms ?? Number(process.env.NVME_ENGINE_MS ?? 3000);
  const depths = o.depths ?? [1, 32, 128];
  const queueCounts = o.queueCounts ?? [1, 4];
  const dir = mkdtempSync(join(tmpdir(), 'nvme-engine-'));
  const image = join(dir, 'disk.img');
  const sock = join(dir, 'nvme.sock');
  makeImage(image);
  const rows: EngineRow[] = [];
  if (print) console.log(`nvme-engine: ${hostLine()}`);
  try {
    for (const loaded of o.loaded ? [false, true] : [false]) {
      const hogs = loaded ? startCpuHogs(2) : undefined;
      try {
        for (const poll of ['polling', 'no polling'] as const)
          for (const nq of queueCounts)
            for (const [what, opcode] of OPS)
              for (const qd of depths) {
                const row = await measureRow({ sock, image, loaded, poll, nq, what, opcode, qd, ms });
                rows.push(row);
                if (print)
                  console.log(
                    `  ${row.bench} ${row.variant}: ${row.iops} IOPS, server CPU ${row.cpu_us} us/cmd (poller spun ${row.spin_us} us/cmd wall); doorbell messages per command ${row.mmio_per_cmd}; load ${row.load}`,
                  );
              }
      } finally {
        hogs?.stop();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

/** Child mode: serve the controller on `socketPath` with `image` as its namespace; IPC 'stats' answers. */
async function serveChild(socketPath: string, image: string): Promise<void> {
  const { NvmeController } = await import('../devices/nvme/index.js');
  const { serve } = await import('../server/server.js');
  const { createLogger } = await import('../server/log.js');
  const log = createLogger({ level: 'warn', pretty: false });
  const nvme = new NvmeController({
    name: 'nvme-engine',
    namespaces: [{ path: image, lbaSize: 512, pageCacheReads: true }],
    queues: MAX_QUEUES,
    log,
    ...(process.env.NVME_BENCH_POLL_US !== undefined && { pollMicros: Number(process.env.NVME_BENCH_POLL_US) }),
  });
  const server = await serve(nvme.device, { socketPath, log });
  process.on('message', () => {
    const c = process.cpuUsage();
    const db = nvme.doorbellStats();
    process.send!({ user: c.user, system: c.system, spinMicros: db.spinMicros, polled: db.polled, mmio: db.mmio });
  });
  process.once('SIGTERM', () => {
    void server
      .close()
      .then(() => nvme.close())
      .then(() => process.exit(0));
  });
  process.send!('ready');
}

if (process.argv[1] === self && process.argv[2] === '--serve') {
  await serveChild(process.argv[3]!, process.argv[4]!);
} else if (process.argv[1] === self) {
  await benchNvmeEngine({ loaded: process.env.NVME_BENCH_LOADED === '1' });
}
