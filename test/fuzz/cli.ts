/**
 * `npm run fuzz -- [--target protocol|nvme|gpio] ...`: the fuzzers as a tool.
 *
 *   npm run fuzz -- --target nvme --seed 7 --actions 100000
 *   npm run fuzz -- --target nvme --seed 7 --actions 5000 --minimise
 *   npm run fuzz -- --target nvme --seed 7 --only 12,480,4711
 *   npm run fuzz -- --messages 100000            (the protocol fuzzer, as before)
 *
 * A guest run prints a progress line per probe interval and a JSON report at
 * the end; it exits 1 on a death, a hang or a probe failure (with the seed and
 * the index of the action it followed). `--minimise` then shrinks the failing
 * prefix to a minimal list of action indices and prints it as a command line
 * and as JSON (`--json FILE` writes the repro there).
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { protocolFuzzCli } from '../protocol/fuzz-protocol-cli.js';
import { minimiseFailure } from './minimise.js';
import { runGuestFuzz } from './runner.js';
import { guestTargets } from './targets.js';

const USAGE = `usage: npm run fuzz -- [--target protocol|nvme|gpio] [--seed N] [--actions N] [--minimise] [--only I,J,...]
       [--probe-every N] [--hang-ms N] [--progress N] [--json FILE]
       protocol: [--messages N] [--batch B]`;

const { values } = parseArgs({
  options: {
    target: { type: 'string', default: 'protocol' },
    seed: { type: 'string' },
    actions: { type: 'string' },
    messages: { type: 'string' },
    batch: { type: 'string' },
    minimise: { type: 'boolean', default: false },
    only: { type: 'string' },
    'probe-every': { type: 'string' },
    'hang-ms': { type: 'string' },
    progress: { type: 'string' },
    json: { type: 'string' },
  },
});

const num = (s: string | undefined): number | undefined => (s === undefined ? undefined : Number(s));
const seed = num(values.seed) ?? (Math.random() * 0x100000000) >>> 0;

function usage(): never {
  console.error(USAGE);
  process.exit(64);
}

if (!Number.isSafeInteger(seed)) usage();

if (values.target === 'protocol') {
  const messages = num(values.messages ?? values.actions) ?? 100_000;
  if (!Number.isSafeInteger(messages) || messages <= 0) usage();
  process.exit((await protocolFuzzCli(messages, seed, num(values.batch))) ? 0 : 1);
}

const target = guestTargets[values.target];
if (!target) usage();
const only = values.only?.split(',').map(Number);
if (only?.some((i) => !Number.isSafeInteger(i) || i < 0)) usage();
const count = num(values.actions) ?? (only ? Math.max(...only) + 1 : 100_000);
const probeEvery = num(values['probe-every']);
const hangMs = num(values['hang-ms']);
const progress = num(values.progress) ?? 50_000;
if (!Number.isSafeInteger(count) || count <= 0) usage();

console.log(`fuzz ${target.name}: seed ${seed}, ${only ? `${only.length} of ` : ''}${count} actions`);
// The device runs in this process: if it throws where nothing catches it, that is the device dying.
const current = { index: -1 };
const died = (err: unknown) => {
  console.error(`fuzz ${target.name}: death: uncaught in action ${current.index} (seed ${seed}):`, err);
  process.exit(1);
};
process.on('uncaughtException', died);
process.on('unhandledRejection', died);
let lastProgress = 0;
const started = Date.now();
const report = await runGuestFuzz(target, {
  seed,
  count,
  only,
  probeEvery,
  hangMs,
  current,
  onProbe: (r) => {
    if (r.actions - lastProgress < progress) return;
    lastProgress = r.actions;
    const s = ((Date.now() - started) / 1000).toFixed(0);
    console.log(
      `  ${r.actions} actions, ${s} s, fds ${r.fds.end} (start ${r.fds.start}), RSS ${r.rssMiB.end} MiB (peak ${r.rssMiB.peak})`,
    );
  },
});
console.log(JSON.stringify(report));
if (!report.failure) {
  console.log(`fuzz ${target.name}: ok, ${report.actions} actions in ${(report.wallMs / 1000).toFixed(1)} s`);
  process.exit(0);
}
console.error(
  `fuzz ${target.name}: ${report.failure.kind} after action ${report.failure.index} (seed ${seed}): ${report.failure.message}`,
);
if (values.minimise) {
  const repro = await minimiseFailure(target, {
    seed,
    candidates: only ?? Array.from({ length: report.failure.index + 1 }, (_, i) => i),
    kind: report.failure.kind,
    probeEvery,
    hangMs,
    log: (line) => console.log(`  minimise: ${line}`),
  });
  console.log(
    `minimal repro (${repro.indices.length} actions): npm run fuzz -- --target ${target.name} --seed ${seed} --only ${repro.indices.join(',')}`,
  );
  console.log(JSON.stringify(repro));
  if (values.json) writeFileSync(values.json, JSON.stringify(repro, null, 2) + '\n');
}
process.exit(1);
