/**
 * Benchmark: a 4-byte REGION_READ of config space, one at a time, measured by
 * a C client (bench/pingpong.c) against
 *   - our server (a PciDevice served by `serve()` in a child Node process), and
 *   - a raw UNIX-socket echo server sending replies of the same sizes,
 * with both processes pinned to CPU 0 (`taskset -c 0`) and unpinned.
 * Target: pinned p50 of ours <= 1.3x raw.
 *
 * Run as `tsx bench/region-read.ts --serve <socket>` it is the server child.
 */
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { compilePingpong, measure, pinned, spawnReady, startEcho, stop, type LatencyStats } from './pingpong.js';

export interface BenchRow {
  bench: string;
  variant: string;
  p50_us: number;
  p99_us: number;
  ops_per_s: number;
  /** ours / raw at p50 (rows of our server only). */
  vs_raw_p50?: number;
}

export interface RegionReadOptions {
  iterations?: number;
  warmup?: number;
}

const self = fileURLToPath(import.meta.url);

function row(variant: string, s: LatencyStats, raw?: LatencyStats): BenchRow {
  const r: BenchRow = {
    bench: 'region-read 4B cfg',
    variant,
    p50_us: +(s.p50_ns / 1000).toFixed(2),
    p99_us: +(s.p99_ns / 1000).toFixed(2),
    ops_per_s: Math.round(s.ops_per_s),
  };
  if (raw) r.vs_raw_p50 = +(s.p50_ns / raw.p50_ns).toFixed(2);
  return r;
}

/** Our server in a child process (node + tsx loader), optionally pinned. */
function startOurs(socketPath: string, pin: boolean) {
  const [cmd, args] = pinned(pin, [process.execPath, '--import', 'tsx', self, '--serve', socketPath]);
  return spawnReady(cmd, args, { ...process.env, LOG_LEVEL: 'silent' });
}

export async function regionReadBench(o: RegionReadOptions = {}): Promise<BenchRow[]> {
  const iters = o.iterations ?? 50_000;
  const warmup = o.warmup ?? 5_000;
  const pp = compilePingpong();
  const dir = mkdtempSync(join(tmpdir(), 'vfu-bench-sock-'));
  const rows: BenchRow[] = [];
  try {
    for (const pin of [true, false]) {
      const tag = pin ? 'pinned cpu0' : 'unpinned';
      const rawSock = join(dir, `raw-${tag[0]}.sock`);
      const echo = await startEcho(pp, rawSock, pin);
      let raw: LatencyStats;
      try {
        raw = measure(pp, rawSock, pin, iters, warmup);
      } finally {
        await stop(echo);
      }
      const oursSock = join(dir, `ours-${tag[0]}.sock`);
      const ours = await startOurs(oursSock, pin);
      let mine: LatencyStats;
      try {
        mine = measure(pp, oursSock, pin, iters, warmup);
      } finally {
        await stop(ours);
      }
      rows.push(row(`raw socket, ${tag}`, raw), row(`vfio-user-ts, ${tag}`, mine, raw));
    }
  } finally {
    pp.remove();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

/** Child mode: serve a small PciDevice on the socket, print `ready`, run until SIGTERM. */
async function serveChild(socketPath: string): Promise<void> {
  const { PciDevice } = await import('../server/pci/index.js');
  const { serve } = await import('../server/server.js');
  const regs = new Uint32Array(1024);
  const dev = new PciDevice({
    name: 'bench',
    id: { vendor: 0x1b36, device: 0x0099, classCode: 0xff0000 },
    bars: [{ index: 0, size: 0x1000, type: 'mem32', read: (off: number) => regs[off >> 2]!, write: (off: number, _s: number, v: number) => { regs[off >> 2] = v; } }],
  });
  const server = await serve(dev, { socketPath });
  process.stdout.write('ready\n');
  process.once('SIGTERM', () => {
    void server.close().then(() => process.exit(0));
  });
}

if (process.argv[1] === self && process.argv[2] === '--serve') {
  await serveChild(process.argv[3]!);
}
