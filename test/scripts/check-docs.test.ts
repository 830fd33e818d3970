/**
 * scripts/check-docs.ts (`npm run lint`'s docs check) on a small tree of its
 * own: it must catch a quoted example that drifted and a doc block that does
 * not compile, say where, skip only the blocks marked as fragments, and
 * `--write` must bring a quoted block up to date.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir, type TempDir } from '../helpers/temp.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const TSX = join(ROOT, 'node_modules', '.bin', 'tsx');

const EXAMPLE = 'export const answer: number = 42;\nconsole.log(answer);\n';
const README = [
  '# Fixture', //                                    line 1
  '',
  '<!-- include: examples/answer.ts -->',
  '```ts',
  'export const answer: number = 41;', //           line 5: drifted from the example
  '```',
  '',
  '```ts',
  "const count: number = 'three';", //              line 9: a type error, column 7
  '```',
  '',
  '```ts fragment',
  'bars: [{ index: 0 }],', //                       not a module: skipped on purpose
  '```',
  '',
].join('\n');

function checkDocs(root: string, ...args: string[]) {
  const run = spawnSync(TSX, [join(ROOT, 'scripts', 'check-docs.ts'), '--root', root, ...args], { encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

// Each case runs the script (tsx + the TypeScript compiler) once or twice: generous on a loaded machine.
describe('scripts/check-docs.ts', { timeout: 120_000 }, () => {
  let dir: TempDir;
  beforeEach(() => {
    dir = tempDir('check-docs-');
    mkdirSync(dir.file('examples'));
    writeFileSync(dir.file('examples/answer.ts'), EXAMPLE);
    writeFileSync(dir.file('README.md'), README);
    writeFileSync(dir.file('package.json'), '{ "type": "module" }\n');
    writeFileSync(
      dir.file('tsconfig.json'),
      JSON.stringify({
        compilerOptions: { strict: true, module: 'nodenext', target: 'es2022', types: [], skipLibCheck: true },
      }),
    );
  });
  afterEach(() => {
    dir.remove();
  });

  it('reports a drifted quoted example and a type error at their doc lines, and counts the fragment', () => {
    const run = checkDocs(dir.path);
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('README.md:5: differs from examples/answer.ts');
    expect(run.stderr).toMatch(/^README\.md:9:7: TS2322: /m);
    expect(run.stdout).toContain(
      '3 TypeScript blocks in 1 files: 1 type-checked, 1 quoted from files, 1 fragments skipped',
    );
  });

  it('--write copies the example into the doc; with the type error fixed the check passes', () => {
    checkDocs(dir.path, '--write');
    expect(readFileSync(dir.file('README.md'), 'utf8')).toContain(
      `<!-- include: examples/answer.ts -->\n\`\`\`ts\n${EXAMPLE}\`\`\``,
    );
    writeFileSync(dir.file('README.md'), readFileSync(dir.file('README.md'), 'utf8').replace("'three'", '3'));
    const run = checkDocs(dir.path);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});
