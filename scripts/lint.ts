/**
 * `npm run lint`: every static check, one after the other, each to the end, so
 * one run shows every kind of problem; exit code 1 if any check failed.
 *
 *   npm run lint                    all checks
 *   npm run lint -- eslint knip     only these (names as in CHECKS)
 *
 * `npm run format` fixes what prettier and clang-format report.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name: string): string => join(ROOT, 'node_modules', '.bin', name);

/** The C and C++ sources: the addon's and the benchmark's driver. */
function cSources(): string[] {
  const found: string[] = [];
  for (const dir of ['native/src', 'bench']) {
    for (const name of readdirSync(join(ROOT, dir))) if (/\.(c|cc|h)$/.test(name)) found.push(`${dir}/${name}`);
  }
  return found.sort();
}

interface Check {
  what: string;
  command: string[];
}

const CHECKS: Record<string, Check> = {
  eslint: {
    what: 'typescript-eslint type-aware rules and the layer rules (eslint.config.js)',
    command: [bin('eslint'), '--max-warnings', '0', '.'],
  },
  cycles: {
    what: 'no import cycles, type-only imports included',
    command: [bin('tsx'), 'scripts/check-cycles.ts'],
  },
  knip: { what: 'no unused files, exports or dependencies (knip.jsonc)', command: [bin('knip')] },
  prettier: {
    what: 'TypeScript, JSON and Markdown formatted (.prettierrc.json)',
    command: [bin('prettier'), '--check', '.'],
  },
  'clang-format': {
    what: 'C and C++ formatted (.clang-format)',
    command: [bin('clang-format'), '--dry-run', '-Werror', ...cSources()],
  },
  docs: {
    what: 'TypeScript in the docs compiles; quoted examples match (scripts/check-docs.ts)',
    command: [bin('tsx'), 'scripts/check-docs.ts'],
  },
};

function main(): void {
  const asked = process.argv.slice(2);
  const unknown = asked.filter((name) => !(name in CHECKS));
  if (unknown.length > 0) {
    console.error(`unknown check ${unknown.join(', ')}; the checks: ${Object.keys(CHECKS).join(', ')}`);
    process.exit(2);
  }
  const results: string[] = [];
  let failed = 0;
  for (const [name, check] of Object.entries(CHECKS)) {
    if (asked.length > 0 && !asked.includes(name)) continue;
    console.log(`\n== ${name}: ${check.what}`);
    const started = Date.now();
    const [command = '', ...args] = check.command;
    const run = spawnSync(command, args, { cwd: ROOT, stdio: 'inherit' });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    const ok = run.status === 0;
    if (!ok) failed++;
    const why = run.error ? ` (${run.error.message})` : run.signal ? ` (${run.signal})` : '';
    results.push(`${ok ? 'ok  ' : 'FAIL'} ${name} ${seconds} s${why}`);
  }
  console.log(`\n${results.join('\n')}`);
  // Not the "N passed, N failed" form: CI reads that form as the test counts.
  console.log(
    failed > 0 ? `lint: ${failed} of ${results.length} checks FAILED` : `lint: all ${results.length} checks ok`,
  );
  process.exitCode = failed > 0 ? 1 : 0;
}

main();
