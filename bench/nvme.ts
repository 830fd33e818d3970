/**
 * NVMe benchmark: QEMU's built-in `-device nvme` against our vfio-user NVMe
 * controller, in ONE guest boot, on identical backing files, with busybox dd
 * and O_DIRECT:
 *   - sequential read, 1 MiB x 256
 *   - sequential write, 1 MiB x 256 + fsync
 *   - 4 KiB reads at queue depth 1, x 20,000
 * Each row runs on QEMU's device, then on ours, back to back, `repeat`
 * times (default 5); the table gives the ratio of the best times and the
 * ratio of the medians, then every run. Times come from the guest's
 * /proc/uptime (10 ms resolution).
 *
 * Environment for a standalone run: NVME_BENCH_ROWS=0,2 (row indexes),
 * NVME_BENCH_REPEAT=N, NVME_BENCH_POLL_US=N (our polling window; 0 = off),
 * NVME_BENCH_FIXED=1 (fixed window), NVME_BENCH_PAGE_CACHE=0 (no
 * synchronous page-cache reads), NVME_BENCH_MEMORY=1 (memory namespace),
 * NVME_BENCH_METRICS=1 (count metrics: connection observer + NVMe per-command).
 *
 * `benchNvme()` is what bench/run.ts calls; `npx tsx bench/nvme.ts` runs it alone.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { NvmeController } from '../devices/nvme/index.js';
import { createLogger } from '../server/log.js';
import { serve } from '../server/server.js';
import { MetricsRegistry } from '../server/metrics/index.js';
import { runGuest } from '../guest-kit/boot.js';

export interface NvmeBenchRow {
  name: string;
  /** Seconds on QEMU's built-in nvme device. */
  qemuSeconds: number;
  /** Seconds on our vfio-user NVMe controller. */
  oursSeconds: number;
  /** qemuSeconds / oursSeconds: >= 1 means we are at least as fast. */
  ratio: number;
  /** Every run's seconds, in order (QEMU's and ours alternate in the guest). */
  qemuRuns: number[];
  oursRuns: number[];
  /** median(qemuRuns) / median(oursRuns). */
  medianRatio: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
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
  /** Runs of each row per device, alternating; the best (minimum) time counts. Default 5 (a shared, busy machine is noisy). */
  repeat?: number | undefined;
  /** Indexes into the row list (default: all three). */
  rows?: number[] | undefined;
}

const ROWS: { name: string; cmd: (dev: string) => string }[] = [
  { name: 'seq read 1 MiB x 256 (O_DIRECT)', cmd: (d) => `dd if=${d} of=/dev/null bs=1M count=256 iflag=direct` },
  {
    name: 'seq write 1 MiB x 256 + fsync (O_DIRECT)',
    cmd: (d) => `dd if=/dev/zero of=${d} bs=1M count=256 oflag=direct conv=fsync`,
  },
  { name: '4 KiB read QD1 x 20000 (O_DIRECT)', cmd: (d) => `dd if=${d} of=/dev/null bs=4k count=20000 iflag=direct` },
];

/** A guest script that finds both controllers by model and times each row on each, `repeat` times, alternating. */
function script(repeat: number, rows: number[]): string {
  const lines = [
    'for i in $(seq 1 100); do [ -b /dev/nvme0n1 ] && [ -b /dev/nvme1n1 ] && break; sleep 0.1; done',
    'for c in /sys/class/nvme/nvme*; do',
    '  n=$(basename $c)',
    '  case "$(cat $c/model)" in QEMU*) QEMU=/dev/${n}n1;; *) OURS=/dev/${n}n1;; esac',
    'done',
    'echo "RESULT qemu_dev=$QEMU ours_dev=$OURS"',
    '[ -n "$QEMU" ] && [ -n "$OURS" ] || { echo "RESULT error=devices"; exit 1; }',
    'now() { cut -d" " -f1 /proc/uptime; }',
    // run NAME CMD...: time CMD, print RESULT NAME=seconds.
    'run() { name=$1; shift; t0=$(now); "$@" >/dev/null 2>&1 || echo "RESULT error=$name"; t1=$(now); echo "RESULT $name=$(awk -v a=$t0 -v b=$t1 \'BEGIN { printf "%.2f", b - a }\')"; }',
  ];
  rows.forEach((i) => {
    const row = ROWS[i]!;
    for (let k = 0; k < repeat; k++) {
      lines.push(`run qemu${i}_${k} ${row.cmd('$QEMU')}`);
      lines.push(`run ours${i}_${k} ${row.cmd('$OURS')}`);
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

/** Run the three rows on both devices in one guest; resolves with the table. */
export async function benchNvme(options: NvmeBenchOptions = {}): Promise<NvmeBenchRow[]> {
  const sizeMiB = options.sizeMiB ?? 512;
  const print = options.print ?? true;
  const repeat = options.repeat ?? 5;
  const selected = options.rows ?? ROWS.map((_, i) => i);
  const dir = mkdtempSync(join(tmpdir(), 'nvme-bench-'));
  const qemuImage = join(dir, 'qemu.img');
  const oursImage = join(dir, 'ours.img');
  const sock = join(dir, 'nvme.sock');
  makeImage(qemuImage, sizeMiB);
  makeImage(oursImage, sizeMiB);
  const log = createLogger({ level: (process.env.LOG_LEVEL as 'info' | undefined) ?? 'warn', pretty: false });
  const metrics = process.env.NVME_BENCH_METRICS === '1' ? new MetricsRegistry() : undefined;
  const nvme = new NvmeController({
    name: 'nvme-bench',
    namespaces: [
      options.memoryNamespace
        ? { size: sizeMiB << 20, lbaSize: 512 }
        : { path: oursImage, lbaSize: 512, pageCacheReads: options.pageCacheReads ?? true },
    ],
    serial: 'BENCH0001',
    queues: 4,
    log,
    timing: true,
    ...(process.env.NVME_BENCH_FIXED === '1' && { pollAdaptive: false }),
    ...(options.pollMicros !== undefined && { pollMicros: options.pollMicros }),
    ...(metrics && { metrics: metrics.device('nvme-bench') }),
  });
  const server = await serve(nvme.device, {
    socketPath: sock,
    log,
    ...(metrics && { metrics }),
    writeMultiple: process.env.BENCH_WRITE_MULTIPLE === '1',
  });
  try {
    const cpu0 = process.cpuUsage();
    if (print) console.log(`nvme bench: booting one guest with QEMU's nvme and ours (${sizeMiB} MiB images in ${dir})`);
    const r = await runGuest({
      devices: [{ socketPath: sock }],
      modules: ['nvme'],
      smp: options.smp ?? 1,
      sharedMemory: options.sharedMemory ?? true,
      qemuArgs: [
        '-drive',
        `file=${qemuImage},if=none,id=qnvme,format=raw`,
        '-device',
        'nvme,drive=qnvme,serial=QEMU0001',
      ],
      script: script(repeat, selected),
      timeoutMs: 600_000,
    });
    if (r.results.error || r.code !== 0)
      throw new Error(`bench guest failed (${r.results.error ?? `exit ${r.code}`}):\n${r.serial}`);
    const runs = (key: string): number[] => Array.from({ length: repeat }, (_, k) => Number(r.results[`${key}_${k}`]));
    const rows = selected.map((i) => {
      const row = ROWS[i]!;
      const qemuRuns = runs(`qemu${i}`);
      const oursRuns = runs(`ours${i}`);
      const qemuSeconds = Math.min(...qemuRuns);
      const oursSeconds = Math.min(...oursRuns);
      return {
        name: row.name,
        qemuSeconds,
        oursSeconds,
        ratio: oursSeconds > 0 ? qemuSeconds / oursSeconds : Infinity,
        qemuRuns,
        oursRuns,
        medianRatio: median(qemuRuns) / median(oursRuns),
      };
    });
    if (print) {
      console.log(
        `best of ${repeat} runs per device (ratio = QEMU time / ours; >= 1: ours as fast), and the ratio of the medians`,
      );
      console.log(
        'row'.padEnd(44),
        'qemu s'.padStart(8),
        'ours s'.padStart(8),
        'ratio'.padStart(7),
        'median'.padStart(7),
      );
      for (const row of rows) {
        console.log(
          row.name.padEnd(44),
          row.qemuSeconds.toFixed(2).padStart(8),
          row.oursSeconds.toFixed(2).padStart(8),
          row.ratio.toFixed(2).padStart(7),
          row.medianRatio.toFixed(2).padStart(7),
        );
      }
      for (const row of rows)
        console.log(`  ${row.name}: qemu ${row.qemuRuns.join(' ')} | ours ${row.oursRuns.join(' ')}`);
      const cpu = process.cpuUsage(cpu0);
      const t = nvme.timing()!; // on: `timing: true` above
      console.log(
        `server process CPU: ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s (${((cpu.user + cpu.system) / t.commands).toFixed(1)} us per command)`,
      );
      const db = nvme.doorbellStats();
      console.log(
        `submissions: ${db.polled} found by polling shadow doorbells, ${db.mmio} doorbell messages; polling spun ${(db.spinMicros / 1e6).toFixed(2)} s, window now ${db.windowMicros} us`,
      );
      const ns = nvme.namespaces[0]!;
      const pc = ns.cacheStats;
      console.log(
        `page cache (preadv2 RWF_NOWAIT): ${pc.hits} reads served in the same turn, ${pc.partial} partly, ${pc.misses} went async`,
      );
      const ra = ns.readAhead;
      if (ra) console.log(`read-ahead: ${ra.hits} hits, ${ra.waits} waits for a fill, ${ra.misses} misses`);
      console.log(
        'queues used by ours:',
        JSON.stringify(nvme.queueStats()),
        'time inside the controller:',
        JSON.stringify(nvme.timing()),
      );
    }
    return rows;
  } finally {
    await server.close();
    await nvme.close();
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
  }).catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
