/**
 * NVMe benchmark: four disks in ONE guest boot, each on its own identical
 * backing file of the same size, timed with busybox dd and O_DIRECT:
 *   - QEMU's built-in `-device nvme`
 *   - QEMU's `virtio-blk-pci`
 *   - QEMU's `virtio-blk-pci` with an iothread (`-object iothread` + `iothread=`)
 *   - ours: our NVMe controller over vfio-user (`vfio-user-pci`)
 * Rows:
 *   - sequential read, 1 MiB x 256
 *   - sequential write, 1 MiB x 256 + fsync
 *   - 4 KiB reads at queue depth 1, x 20,000
 * Each row runs `repeat` times (default 5) on every disk, alternating (the
 * order rotates each round so no disk always goes first). The output gives
 * every run, the medians, and ratio = best built-in median / ours median
 * (>= 1: ours at least as fast as the best of QEMU's own). Times come from
 * the guest's /proc/uptime (10 ms resolution). The host's load average is
 * recorded before and after (the bench machine is shared; say so with the
 * figures).
 *
 * `loaded: true` runs the same with two CPU-bound processes beside it (a
 * loaded host: QEMU's own devices run inside QEMU, ours needs CPU of its own).
 *
 * Environment for a standalone run: NVME_BENCH_ROWS=0,2 (row indexes),
 * NVME_BENCH_REPEAT=N, NVME_BENCH_POLL_US=N (our polling window; 0 = off),
 * NVME_BENCH_FIXED=1 (fixed window), NVME_BENCH_PAGE_CACHE=0 (no
 * synchronous page-cache reads), NVME_BENCH_MEMORY=1 (memory namespace),
 * NVME_BENCH_METRICS=1 (count metrics: connection observer + NVMe per-command),
 * NVME_BENCH_LOADED=1 (two CPU hogs beside it), NVME_BENCH_POLL_AB=1 (a fifth
 * disk: ours again with polling off, an A/B of polling in the same boot; also
 * through bench/run.ts).
 *
 * `benchNvme()` is what bench/run.ts calls; `npx tsx bench/nvme.ts` runs it alone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { NvmeController } from '../devices/nvme/index.js';
import { createLogger } from '../server/log.js';
import { serve } from '../server/server.js';
import { MetricsRegistry } from '../server/metrics/index.js';
import { runGuest } from '../guest-kit/boot.js';
import { ensureKit } from '../guest-kit/kit.js';

/** The four disks, in the order they are named in the output. */
const CONTENDERS = ['nvme', 'vblk', 'vblkio', 'ours'] as const;
/** 'ours_nopoll': a second controller of ours with polling off (the pollAB option), for an A/B in the same boot. */
export type Contender = (typeof CONTENDERS)[number] | 'ours_nopoll';
const BUILT_IN = ['nvme', 'vblk', 'vblkio'] as const;

/** What each contender is, for the output. */
export const CONTENDER_NAMES: Record<Contender, string> = {
  nvme: "QEMU's -device nvme",
  vblk: 'virtio-blk-pci',
  vblkio: 'virtio-blk-pci + iothread',
  ours: 'ours (vfio-user-pci, devices/nvme)',
  ours_nopoll: 'ours, polling off (pollMicros 0)',
};

export interface NvmeBenchRow {
  name: string;
  /** 'quiet' or 'loaded' (two CPU hogs beside the bench). */
  host: 'quiet' | 'loaded';
  /** The contenders, in output order. */
  contenders: readonly Contender[];
  /** Seconds of every run, per contender, in the order they ran. */
  runs: Partial<Record<Contender, number[]>>;
  /** Median seconds per contender. */
  medians: Partial<Record<Contender, number>>;
  /** The built-in contender with the lowest median. */
  bestBuiltIn: Contender;
  /** medians[bestBuiltIn] / medians.ours: >= 1 means ours is at least as fast as the best built-in. */
  ratio: number;
  /** With pollAB: medians[bestBuiltIn] / medians.ours_nopoll. */
  ratioNoPoll?: number;
  /** /proc/loadavg's 1-minute figure before the boot and after the runs. */
  loadBefore: number;
  loadAfter: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The host's 1-minute load average (what `uptime` prints first). */
export function loadAverage(): number {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

/** One line describing the host for the output: CPU model, cores, load. */
export function hostLine(): string {
  const c = cpus();
  return `host: ${c[0]?.model ?? '?'} x ${c.length}, load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}, ${new Date().toISOString()}`;
}

/** `n` CPU-bound processes (busy loops) until stopped: a loaded host. */
export function startCpuHogs(n: number): { stop(): void } {
  const hogs: ChildProcess[] = [];
  for (let i = 0; i < n; i++) hogs.push(spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }));
  const stop = (): void => {
    for (const h of hogs) if (h.exitCode === null && h.signalCode === null) h.kill('SIGKILL');
  };
  process.once('exit', stop); // a crashed bench never leaves them spinning
  return { stop };
}

export interface NvmeBenchOptions {
  /** Backing file size, default 512 MiB (room for the 256 MiB sequential rows). */
  sizeMiB?: number;
  /** Print progress and the table (default true). */
  print?: boolean;
  /** Guest vCPUs (default 1). */
  smp?: number;
  /** Default true: guest RAM is a shared memfd (our device DMAs through mmap). */
  sharedMemory?: boolean;
  /** Back ours with memory instead of the file (isolates transport and interrupt costs from file I/O). */
  memoryNamespace?: boolean;
  /** Serve cached reads synchronously with preadv2(RWF_NOWAIT) (default true; false measures the read-ahead / thread-pool path). */
  pageCacheReads?: boolean;
  /** Our controller's shadow-doorbell polling window (NvmeControllerOptions.pollMicros; default its default). */
  pollMicros?: number | undefined;
  /** Runs of each row per contender, alternating. Default 5 (a shared, busy machine is noisy). */
  repeat?: number | undefined;
  /** Indexes into the row list (default: all three). */
  rows?: number[] | undefined;
  /** Two CPU-bound processes run beside the bench (default false). */
  loaded?: boolean;
  /** Add a fifth disk: a second controller of ours with polling off (A/B of polling in the same boot). */
  pollAB?: boolean;
}

const ROWS: { name: string; cmd: (dev: string) => string }[] = [
  { name: 'seq read 1 MiB x 256 (O_DIRECT)', cmd: (d) => `dd if=${d} of=/dev/null bs=1M count=256 iflag=direct` },
  {
    name: 'seq write 1 MiB x 256 + fsync (O_DIRECT)',
    cmd: (d) => `dd if=/dev/zero of=${d} bs=1M count=256 oflag=direct conv=fsync`,
  },
  { name: '4 KiB read QD1 x 20000 (O_DIRECT)', cmd: (d) => `dd if=${d} of=/dev/null bs=4k count=20000 iflag=direct` },
];

/** Serial numbers the guest script tells the disks apart by. */
const SERIAL = {
  nvme: 'QEMU0001',
  vblk: 'VBLK0001',
  vblkio: 'VBLKIO01',
  ours: 'BENCH0001',
  ours_nopoll: 'BENCH0002',
} as const;

/**
 * A guest script that finds the four disks (NVMe by model, virtio-blk by
 * serial) and times each row on each, `repeat` rounds, the order rotating.
 */
function script(repeat: number, rows: number[], contenders: readonly Contender[]): string {
  const nvmes = contenders.includes('ours_nopoll') ? 3 : 2;
  const lines = [
    `for i in $(seq 1 100); do [ $(ls /sys/class/nvme | wc -l) -ge ${nvmes} ] && [ -b /dev/nvme${nvmes - 1}n1 ] && [ -b /dev/vda ] && [ -b /dev/vdb ] && break; sleep 0.1; done`,
    'for c in /sys/class/nvme/nvme*; do',
    '  n=$(basename $c)',
    `  case "$(cat $c/serial)" in ${SERIAL.nvme}*) D_nvme=/dev/\${n}n1;; ${SERIAL.ours_nopoll}*) D_ours_nopoll=/dev/\${n}n1;; ${SERIAL.ours}*) D_ours=/dev/\${n}n1;; esac`,
    'done',
    'for b in /sys/block/vd*; do',
    `  case "$(cat $b/serial)" in ${SERIAL.vblkio}*) D_vblkio=/dev/$(basename $b);; ${SERIAL.vblk}*) D_vblk=/dev/$(basename $b);; esac`,
    'done',
    `echo "RESULT devices=${contenders.map((c) => `${c}:$D_${c}`).join(',')}"`,
    `${contenders.map((c) => `[ -n "$D_${c}" ]`).join(' && ')} || { echo "RESULT error=devices"; exit 1; }`,
    'now() { cut -d" " -f1 /proc/uptime; }',
    // run NAME CMD...: time CMD, print RESULT NAME=seconds.
    'run() { name=$1; shift; t0=$(now); "$@" >/dev/null 2>&1 || echo "RESULT error=$name"; t1=$(now); echo "RESULT $name=$(awk -v a=$t0 -v b=$t1 \'BEGIN { printf "%.2f", b - a }\')"; }',
  ];
  rows.forEach((i) => {
    const row = ROWS[i]!;
    for (let k = 0; k < repeat; k++) {
      for (let j = 0; j < contenders.length; j++) {
        const c = contenders[(j + k) % contenders.length]!;
        lines.push(`run ${c}${i}_${k} ${row.cmd(`$D_${c}`)}`);
      }
    }
  });
  return lines.join('\n');
}

/** Fill a file with the same non-zero bytes (so reads hit data, not holes). */
function makeImage(path: string, sizeMiB: number): void {
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i += 8) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
  const fd = openSync(path, 'w');
  try {
    for (let i = 0; i < sizeMiB; i++) writeSync(fd, chunk, 0, chunk.length, i * chunk.length);
  } finally {
    closeSync(fd);
  }
}

/** Run the rows on the four disks in one guest; resolves with one row per table row. */
export async function benchNvme(options: NvmeBenchOptions = {}): Promise<NvmeBenchRow[]> {
  const sizeMiB = options.sizeMiB ?? 512;
  const print = options.print ?? true;
  const repeat = options.repeat ?? 5;
  const host = options.loaded ? 'loaded' : 'quiet';
  // NVME_BENCH_POLL_US also reaches runs through bench/run.ts (A/B without polling: 0).
  const envPoll = process.env.NVME_BENCH_POLL_US;
  const pollMicros = options.pollMicros ?? (envPoll ? Number(envPoll) : undefined);
  const selected = options.rows ?? ROWS.map((_, i) => i);
  const dir = mkdtempSync(join(tmpdir(), 'nvme-bench-'));
  const image = (c: Contender): string => join(dir, `${c}.img`);
  const sock = join(dir, 'nvme.sock');
  const contenders: readonly Contender[] = options.pollAB ? [...CONTENDERS, 'ours_nopoll'] : CONTENDERS;
  for (const c of contenders) makeImage(image(c), sizeMiB);
  const log = createLogger({ level: (process.env.LOG_LEVEL as 'info' | undefined) ?? 'warn', pretty: false });
  const metrics = process.env.NVME_BENCH_METRICS === '1' ? new MetricsRegistry() : undefined;
  const nvme = new NvmeController({
    name: 'nvme-bench',
    namespaces: [
      options.memoryNamespace
        ? { size: sizeMiB << 20, lbaSize: 512 }
        : { path: image('ours'), lbaSize: 512, pageCacheReads: options.pageCacheReads ?? true },
    ],
    serial: SERIAL.ours,
    queues: 4,
    log,
    timing: true,
    ...(process.env.NVME_BENCH_FIXED === '1' && { pollAdaptive: false }),
    ...(pollMicros !== undefined && { pollMicros }),
    ...(metrics && { metrics: metrics.device('nvme-bench') }),
  });
  const server = await serve(nvme.device, {
    socketPath: sock,
    log,
    ...(metrics && { metrics }),
    writeMultiple: process.env.BENCH_WRITE_MULTIPLE === '1',
  });
  // pollAB: the same controller again, polling off, on its own file and socket (same process, so the same CPU).
  const sockNoPoll = join(dir, 'nvme-nopoll.sock');
  const nopoll = options.pollAB
    ? new NvmeController({
        name: 'nvme-bench-nopoll',
        namespaces: [{ path: image('ours_nopoll'), lbaSize: 512, pageCacheReads: options.pageCacheReads ?? true }],
        serial: SERIAL.ours_nopoll,
        queues: 4,
        log,
        pollMicros: 0,
      })
    : undefined;
  const serverNoPoll = nopoll ? await serve(nopoll.device, { socketPath: sockNoPoll, log }) : undefined;
  const hogs = options.loaded ? startCpuHogs(2) : undefined;
  try {
    const kit = await ensureKit();
    const cpu0 = process.cpuUsage();
    const loadBefore = loadAverage();
    if (print) {
      console.log(
        `nvme bench (${host} host${options.loaded ? ': two CPU-bound processes beside it' : ''}): one guest, QEMU ${kit.stamp.qemuVersion}, ${contenders.length} disks on ${sizeMiB} MiB images in ${dir}`,
      );
      console.log(hostLine());
      if (pollMicros !== undefined)
        console.log(`ours: pollMicros ${pollMicros}${pollMicros === 0 ? ' (polling off)' : ''}`);
    }
    const r = await runGuest({
      devices: [{ socketPath: sock }, ...(nopoll ? [{ socketPath: sockNoPoll }] : [])],
      modules: ['nvme', 'virtio_blk'],
      smp: options.smp ?? 1,
      sharedMemory: options.sharedMemory ?? true,
      qemuArgs: [
        '-drive',
        `file=${image('nvme')},if=none,id=qnvme,format=raw`,
        '-device',
        `nvme,drive=qnvme,serial=${SERIAL.nvme}`,
        '-drive',
        `file=${image('vblk')},if=none,id=qvblk,format=raw`,
        '-device',
        `virtio-blk-pci,drive=qvblk,serial=${SERIAL.vblk}`,
        '-object',
        'iothread,id=io0',
        '-drive',
        `file=${image('vblkio')},if=none,id=qvblkio,format=raw`,
        '-device',
        `virtio-blk-pci,drive=qvblkio,serial=${SERIAL.vblkio},iothread=io0`,
      ],
      script: script(repeat, selected, contenders),
      timeoutMs: 1_800_000,
    });
    if (r.results.error || r.code !== 0)
      throw new Error(`bench guest failed (${r.results.error ?? `exit ${r.code}`}):\n${r.serial}`);
    const loadAfter = loadAverage();
    const runsOf = (key: string): number[] =>
      Array.from({ length: repeat }, (_, k) => Number(r.results[`${key}_${k}`]));
    const rows = selected.map((i): NvmeBenchRow => {
      const runs = Object.fromEntries(contenders.map((c) => [c, runsOf(`${c}${i}`)])) as Record<Contender, number[]>;
      const medians = Object.fromEntries(contenders.map((c) => [c, median(runs[c])])) as Record<Contender, number>;
      const bestBuiltIn = [...BUILT_IN].sort((a, b) => medians[a] - medians[b])[0]!;
      return {
        name: ROWS[i]!.name,
        host,
        runs,
        medians,
        bestBuiltIn,
        ratio: medians.ours > 0 ? medians[bestBuiltIn] / medians.ours : Infinity,
        ...(options.pollAB && { ratioNoPoll: medians[bestBuiltIn] / medians.ours_nopoll }),
        contenders,
        loadBefore,
        loadAfter,
      };
    });
    if (print) {
      console.log(`guest disks: ${r.results.devices}; load average before ${loadBefore}, after ${loadAfter}`);
      console.log(`every run (seconds, ${repeat} per disk, alternating; lower is better):`);
      for (const row of rows) {
        console.log(`  ${row.name}`);
        for (const c of contenders)
          console.log(`    ${CONTENDER_NAMES[c].padEnd(36)} ${row.runs[c]!.map((x) => x.toFixed(2)).join(' ')}`);
      }
      console.log(`medians (seconds) and ratio = best built-in median / ours median (>= 1: ours at least as fast):`);
      console.log(
        'row'.padEnd(42),
        ...contenders.map((c) => c.padStart(7)),
        'best'.padStart(7),
        'ratio'.padStart(6),
        ...(options.pollAB ? ['ratio nopoll'] : []),
      );
      for (const row of rows)
        console.log(
          row.name.padEnd(42),
          ...contenders.map((c) => row.medians[c]!.toFixed(2).padStart(7)),
          row.bestBuiltIn.padStart(7),
          row.ratio.toFixed(2).padStart(6),
          ...(row.ratioNoPoll !== undefined ? [row.ratioNoPoll.toFixed(2).padStart(12)] : []),
        );
      const cpu = process.cpuUsage(cpu0);
      const t = nvme.timing()!; // on: `timing: true` above
      console.log(
        `server process CPU: ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s (${((cpu.user + cpu.system) / t.commands).toFixed(1)} us per command)`,
      );
      const db = nvme.doorbellStats();
      console.log(
        `submissions: ${db.polled} found by polling shadow doorbells, ${db.mmio} doorbell messages; polling spun ${(db.spinMicros / 1e6).toFixed(2)} s, window now ${db.windowMicros} us, ${db.backedOff} watches backed off (busy host)`,
      );
      const ns = nvme.namespaces[0]!;
      const pc = ns.cacheStats;
      console.log(
        `page cache (preadv2 RWF_NOWAIT): ${pc.hits} reads served in the same turn, ${pc.partial} partly, ${pc.misses} went async`,
      );
      const ra = ns.readAhead;
      if (ra) console.log(`read-ahead: ${ra.hits} hits, ${ra.waits} waits for a fill, ${ra.misses} misses`);
    }
    return rows;
  } finally {
    hogs?.stop();
    await server.close();
    await nvme.close();
    await serverNoPoll?.close();
    await nopoll?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const list = (v: string | undefined): number[] | undefined => (v ? v.split(',').map(Number) : undefined);
  benchNvme({
    memoryNamespace: process.env.NVME_BENCH_MEMORY === '1',
    pageCacheReads: process.env.NVME_BENCH_PAGE_CACHE !== '0',
    rows: list(process.env.NVME_BENCH_ROWS),
    repeat: process.env.NVME_BENCH_REPEAT ? Number(process.env.NVME_BENCH_REPEAT) : undefined,
    pollMicros: process.env.NVME_BENCH_POLL_US ? Number(process.env.NVME_BENCH_POLL_US) : undefined,
    loaded: process.env.NVME_BENCH_LOADED === '1',
    pollAB: process.env.NVME_BENCH_POLL_AB === '1',
  }).catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
