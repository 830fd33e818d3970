/**
 * `npm run bench [-- --json] [-- --only name,...] [-- --iterations N] [-- --loaded]
 *   [-- --libvfio-user DIR]`: runs every benchmark and prints one table (or JSON
 * with --json). --loaded adds a pass with two CPU-bound processes beside the
 * benchmark (nvme, nvme-engine); --libvfio-user DIR (a libvfio-user build dir)
 * adds its gpio sample to region-read.
 *
 * A benchmark module exports an async function returning rows (plain objects:
 * a `bench` and a `variant` column, then numbers). Register it in BENCHES.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

type Row = Record<string, string | number | undefined>;

interface Bench {
  name: string;
  /** Whether it can run here (e.g. its module exists). */
  available(): boolean;
  /**
   * `iterations` undefined: the benchmark's own default (nvme: runs per disk).
   * `loaded`: also measure with two CPU-bound processes beside it (where the benchmark supports it).
   * `print`: the benchmark may print its runs (to stdout; off with --json).
   */
  run(opts: {
    iterations: number | undefined;
    loaded: boolean;
    print: boolean;
    libvfioUser: string | undefined;
  }): Promise<Row[]>;
}

const here = dirname(fileURLToPath(import.meta.url));

const BENCHES: Bench[] = [
  {
    name: 'region-read',
    available: () => true,
    run: async (o) => {
      const m = await import('./region-read.js');
      return (await m.regionReadBench({ iterations: o.iterations, libvfioUser: o.libvfioUser })) as unknown as Row[];
    },
  },
  {
    // serve --watch: reload time, requests held, client read latency (a daemon child process).
    name: 'hot-reload',
    available: () => true,
    run: async (o) => {
      const m = await import('./hot-reload.js');
      return m.hotReloadBench({ iterations: o.iterations });
    },
  },
  {
    // bench/nvme.ts: QEMU's nvme, virtio-blk, virtio-blk + iothread and ours in one guest. Slow (boots a VM per pass).
    name: 'nvme',
    available: () => existsSync(join(here, 'nvme.ts')),
    run: async (o) => {
      const m = await import('./nvme.js');
      const rows: Row[] = [];
      // --loaded: the quiet pass, then the same with two CPU hogs beside it.
      for (const loaded of o.loaded ? [false, true] : [false]) {
        const pollAB = process.env.NVME_BENCH_POLL_AB === '1';
        for (const r of await m.benchNvme({ print: o.print, loaded, repeat: o.iterations, pollAB })) {
          rows.push({
            bench: `nvme (guest dd, ${r.host})`,
            variant: r.name,
            ...Object.fromEntries(r.contenders.map((c) => [`${c}_s`, r.medians[c]])),
            best: r.bestBuiltIn,
            ratio: r.ratio,
            ...(r.ratioNoPoll !== undefined && { ratio_nopoll: r.ratioNoPoll }),
            load: `${r.loadBefore}-${r.loadAfter}`,
          });
        }
      }
      return rows;
    },
  },
  {
    // bench/nvme-engine.ts: the controller's CPU per command, driven by our client on shared memory (no QEMU).
    name: 'nvme-engine',
    available: () => existsSync(join(here, 'nvme-engine.ts')),
    run: async (o) => {
      const m = await import('./nvme-engine.js');
      return (await m.benchNvmeEngine({ print: o.print, loaded: o.loaded })) as unknown as Row[];
    },
  },
];

function fmt(v: string | number | undefined): string {
  if (v === undefined) return '';
  if (typeof v === 'number') return Number.isInteger(v) ? v.toLocaleString('en-US') : v.toFixed(2);
  return v;
}

/** Render rows as an aligned text table (columns: the union of keys, in first-seen order). */
export function table(rows: Row[]): string {
  const cols: string[] = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  const cells = [cols, ...rows.map((r) => cols.map((c) => fmt(r[c])))];
  const widths = cols.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  const line = (row: string[]) => row.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: 'boolean', default: false },
      only: { type: 'string' },
      iterations: { type: 'string' },
      loaded: { type: 'boolean', default: false },
      'libvfio-user': { type: 'string' },
    },
  });
  const only = values.only?.split(',').map((s) => s.trim());
  const iterations = values.iterations !== undefined ? Number(values.iterations) : undefined;
  const rows: Row[] = [];
  let failed = false;
  for (const b of BENCHES) {
    if (only && !only.includes(b.name)) continue;
    if (!b.available()) {
      if (only) console.error(`bench ${b.name}: not available`);
      continue;
    }
    if (!values.json) console.error(`running ${b.name} ...`);
    try {
      rows.push(
        ...(await b.run({
          iterations,
          loaded: values.loaded,
          print: !values.json,
          libvfioUser: values['libvfio-user'],
        })),
      );
    } catch (err) {
      failed = true;
      console.error(`bench ${b.name} failed:`, err);
    }
  }
  if (values.json) console.log(JSON.stringify(rows, null, 2));
  else console.log(table(rows));
  process.exitCode = failed ? 1 : 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
