/**
 * Benchmark: a 4-byte REGION_READ of config space, one at a time, measured by
 * a C client (bench/pingpong.c) against
 *   - our server (a PciDevice served by `serve()` in a child Node process), and
 *   - a raw UNIX-socket echo server sending replies of the same sizes,
 * with both processes pinned to CPU 0 (`taskset -c 0`) and unpinned.
 * Target: pinned p50 of ours <= 1.3x raw.
 * Extra rows: a bare Node echo on the native channel (no protocol code: the
 * floor any Node server pays for the event loop and the JS callback), and our
 * TypeScript client (client/) against our server, which is what a device
 * author's test sees.
 *
 * With `libvfioUser` (`npm run bench -- --only region-read --libvfio-user DIR`,
 * DIR a libvfio-user build dir holding samples/gpio-pci-idio-16): that sample
 * and our server, both pinned to CPU 0 with the C client, measured in
 * alternating runs (default 7 each) in the same process run; rows give every
 * run's p50, the median, and ours / libvfio-user.
 *
 * Child modes: `tsx bench/region-read.ts --serve <socket>` is the server;
 * `--floor <socket>` is the bare native echo;
 * `--ts-client <socket> <iters> <warmup>` is the TypeScript client.
 */
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { compilePingpong, measure, pinned, spawnReady, startEcho, stop, type LatencyStats } from './pingpong.js';

export interface BenchRow {
  bench: string;
  variant: string;
  p50_us: number;
  p99_us: number;
  ops_per_s: number;
  /** ours / raw at p50 (rows of our server only). */
  vs_raw_p50?: number;
  /** ours / libvfio-user at p50 (the --libvfio-user comparison). */
  vs_libvfio_user_p50?: number;
  /** Every run's p50 in microseconds (the --libvfio-user comparison). */
  runs_p50_us?: string;
  /** 1-minute load average when the measurement started. */
  load?: number;
}

export interface RegionReadOptions {
  iterations?: number | undefined;
  warmup?: number;
  /** Runs per measurement; the run with the median p50 is reported (default 3: the machine is shared and noisy). */
  repeat?: number;
  /** A libvfio-user build dir with samples/gpio-pci-idio-16: adds it as a contender (pinned), and ours / libvfio-user. */
  libvfioUser?: string | undefined;
  /** Alternating runs of each in the libvfio-user comparison (default 7). */
  libvfioUserRuns?: number;
}

/** Run `fn` `n` times and keep the run with the median p50. */
function medianOf(n: number, fn: () => LatencyStats): LatencyStats {
  const runs = Array.from({ length: Math.max(1, n) }, fn).sort((a, b) => a.p50_ns - b.p50_ns);
  return runs[runs.length >> 1]!;
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

/** Our TypeScript client in a child process, optionally pinned; prints LatencyStats JSON. */
function measureTsClient(socketPath: string, pin: boolean, iters: number, warmup: number): LatencyStats {
  const [cmd, args] = pinned(pin, [
    process.execPath,
    '--import',
    'tsx',
    self,
    '--ts-client',
    socketPath,
    String(iters),
    String(warmup),
  ]);
  const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out.trim().split('\n').pop()!) as LatencyStats;
}

/** Our server (mode '--serve') or the bare native echo ('--floor') in a child process (node + tsx loader), optionally pinned. */
function startOurs(socketPath: string, pin: boolean, mode: '--serve' | '--floor' = '--serve') {
  const [cmd, args] = pinned(pin, [process.execPath, '--import', 'tsx', self, mode, socketPath]);
  return spawnReady(cmd, args, { ...process.env, LOG_LEVEL: 'silent' });
}

export async function regionReadBench(o: RegionReadOptions = {}): Promise<BenchRow[]> {
  const iters = o.iterations ?? 50_000;
  const warmup = o.warmup ?? 5_000;
  const repeat = o.repeat ?? 3;
  const pp = compilePingpong();
  const dir = mkdtempSync(join(tmpdir(), 'vfu-bench-sock-'));
  const rows: BenchRow[] = [];
  let pinnedRaw: LatencyStats | undefined;
  try {
    for (const pin of [true, false]) {
      const tag = pin ? 'pinned cpu0' : 'unpinned';
      const rawSock = join(dir, `raw-${tag[0]}.sock`);
      const echo = await startEcho(pp, rawSock, pin);
      let raw: LatencyStats;
      try {
        raw = medianOf(repeat, () => measure(pp, rawSock, pin, iters, warmup));
      } finally {
        await stop(echo);
      }
      if (pin) pinnedRaw = raw;
      const floorSock = join(dir, `floor-${tag[0]}.sock`);
      const floor = await startOurs(floorSock, pin, '--floor');
      let floorStats: LatencyStats;
      try {
        floorStats = medianOf(repeat, () => measure(pp, floorSock, pin, iters, warmup));
      } finally {
        await stop(floor);
      }
      const oursSock = join(dir, `ours-${tag[0]}.sock`);
      const ours = await startOurs(oursSock, pin);
      let mine: LatencyStats;
      let viaTs: LatencyStats;
      try {
        mine = medianOf(repeat, () => measure(pp, oursSock, pin, iters, warmup));
        viaTs = measureTsClient(oursSock, pin, Math.min(iters, 20_000), Math.min(warmup, 2_000));
      } finally {
        await stop(ours);
      }
      rows.push(
        row(`raw socket (C echo), ${tag}`, raw),
        row(`Node native echo (floor), ${tag}`, floorStats, raw),
        row(`vfio-user-ts, ${tag}`, mine, raw),
        row(`vfio-user-ts + TS client, ${tag}`, viaTs, raw),
      );
    }
    if (o.libvfioUser)
      rows.push(...(await versusLibvfioUser(pp, dir, o.libvfioUser, o.libvfioUserRuns ?? 7, iters, warmup, pinnedRaw)));
  } finally {
    pp.remove();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

function load1(): number {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

/**
 * libvfio-user's gpio sample on `socketPath`, pinned to CPU 0. It prints
 * nothing when ready: wait for its listening socket. It re-attaches after a
 * client leaves (its default), so one process serves every run.
 */
async function startLibvfioUserGpio(buildDir: string, socketPath: string): Promise<ChildProcess> {
  const bin = join(buildDir, 'samples', 'gpio-pci-idio-16');
  if (!existsSync(bin)) throw new Error(`--libvfio-user: no ${bin} (give a libvfio-user build dir)`);
  const [cmd, args] = pinned(true, [bin, socketPath]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  const until = Date.now() + 10_000;
  while (!(existsSync(socketPath) && statSync(socketPath).isSocket())) {
    if (child.exitCode !== null) throw new Error(`libvfio-user gpio sample exited (${child.exitCode})`);
    if (Date.now() > until) throw new Error('libvfio-user gpio sample: no socket after 10 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  return child;
}

/** Ours and libvfio-user's gpio sample, pinned to CPU 0, alternating runs with the same C client. */
async function versusLibvfioUser(
  pp: ReturnType<typeof compilePingpong>,
  dir: string,
  buildDir: string,
  runs: number,
  iters: number,
  warmup: number,
  raw: LatencyStats | undefined,
): Promise<BenchRow[]> {
  const oursSock = join(dir, 'ours-vs-lvu.sock');
  const lvuSock = join(dir, 'lvu-gpio.sock');
  const ours = await startOurs(oursSock, true);
  let lvu: ChildProcess | undefined;
  const load = load1();
  const mine: LatencyStats[] = [];
  const theirs: LatencyStats[] = [];
  try {
    lvu = await startLibvfioUserGpio(buildDir, lvuSock);
    for (let k = 0; k < runs; k++) {
      // Alternate which goes first, so neither always follows the other.
      if (k % 2 === 0) {
        mine.push(measure(pp, oursSock, true, iters, warmup));
        theirs.push(measure(pp, lvuSock, true, iters, warmup));
      } else {
        theirs.push(measure(pp, lvuSock, true, iters, warmup));
        mine.push(measure(pp, oursSock, true, iters, warmup));
      }
    }
  } finally {
    await stop(ours);
    if (lvu) await stop(lvu);
  }
  const mid = (xs: LatencyStats[]): LatencyStats => [...xs].sort((a, b) => a.p50_ns - b.p50_ns)[xs.length >> 1]!;
  const list = (xs: LatencyStats[]): string => xs.map((x) => (x.p50_ns / 1000).toFixed(2)).join(' ');
  const m = mid(mine);
  const t = mid(theirs);
  return [
    { ...row('libvfio-user gpio sample (C), pinned cpu0', t, raw), runs_p50_us: list(theirs), load },
    {
      ...row('vfio-user-ts, pinned cpu0, same runs as libvfio-user', m, raw),
      vs_libvfio_user_p50: +(m.p50_ns / t.p50_ns).toFixed(3),
      runs_p50_us: list(mine),
      load,
    },
  ];
}

/** Child mode: serve a small PciDevice on the socket, print `ready`, run until SIGTERM. */
async function serveChild(socketPath: string): Promise<void> {
  const { PciDevice } = await import('../server/pci/index.js');
  const { serve } = await import('../server/server.js');
  const regs = new Uint32Array(1024);
  const dev = new PciDevice({
    name: 'bench',
    id: { vendor: 0x1b36, device: 0x0099, classCode: 0xff0000 },
    bars: [
      {
        index: 0,
        size: 0x1000,
        type: 'mem32',
        read: (off: number) => regs[off >> 2]!,
        write: (off: number, _s: number, v: number) => {
          regs[off >> 2] = v;
        },
      },
    ],
  });
  const server = await serve(dev, { socketPath });
  process.stdout.write('ready\n');
  process.once('SIGTERM', () => {
    void server.close().then(() => process.exit(0));
  });
}

/**
 * Child mode: the floor. A Node process answering on the native channel with
 * replies of the right size and nothing else (no decoding, no device).
 */
async function floorChild(socketPath: string): Promise<void> {
  const { native } = await import('../native/index.js');
  const lfd = native.listenUnix(socketPath, 4);
  const reply = new Uint8Array(36);
  const dv = new DataView(reply.buffer);
  native.watchListener(
    lfd,
    (fd) => {
      const ch = native.openChannel(
        fd,
        { maxMessageSize: 1 << 20, maxFds: 16 },
        (msg) => {
          if (msg.readUInt16LE(2) === 1) {
            const echo = new Uint8Array(msg); // VERSION: the request echoed as the reply
            new DataView(echo.buffer).setUint32(8, 1, true);
            ch.send(echo);
            return;
          }
          reply.set(msg.subarray(0, 32));
          dv.setUint32(4, 36, true);
          dv.setUint32(8, 1, true);
          dv.setUint32(28, 4, true);
          ch.send(reply);
        },
        () => ch.close(),
      );
    },
    () => undefined,
  );
  process.stdout.write('ready\n');
  process.once('SIGTERM', () => process.exit(0));
}

/** Child mode: the TypeScript client doing the same sequential 4-byte config reads. */
async function tsClientChild(socketPath: string, iters: number, warmup: number): Promise<void> {
  const { VfioUserClient } = await import('../client/index.js');
  const client = await VfioUserClient.connect(socketPath);
  const lat = new Float64Array(iters);
  let start = 0n;
  for (let i = 0; i < warmup + iters; i++) {
    if (i === warmup) start = process.hrtime.bigint();
    const t0 = process.hrtime.bigint();
    await client.regionRead(7, 0, 4);
    if (i >= warmup) lat[i - warmup] = Number(process.hrtime.bigint() - t0);
  }
  const total = Number(process.hrtime.bigint() - start);
  client.close();
  lat.sort();
  const stats: LatencyStats = {
    p50_ns: lat[iters >> 1]!,
    p99_ns: lat[Math.floor((iters * 99) / 100)]!,
    ops_per_s: (iters * 1e9) / total,
  };
  process.stdout.write(JSON.stringify(stats) + '\n');
}

if (process.argv[1] === self && process.argv[2] === '--serve') {
  await serveChild(process.argv[3]!);
} else if (process.argv[1] === self && process.argv[2] === '--floor') {
  await floorChild(process.argv[3]!);
} else if (process.argv[1] === self && process.argv[2] === '--ts-client') {
  await tsClientChild(process.argv[3]!, Number(process.argv[4]), Number(process.argv[5]));
}
