/**
 * scripts/check-cycles.ts (`npm run lint`'s cycle check) on a small tree of
 * its own: a circle made of a type-only import and a value import is a cycle
 * (ESLint's import-x/no-cycle would not see it); the same files without the
 * circle pass.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir, type TempDir } from '../helpers/temp.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const TSX = join(ROOT, 'node_modules', '.bin', 'tsx');

function checkCycles(root: string) {
  const run = spawnSync(TSX, [join(ROOT, 'scripts', 'check-cycles.ts'), '--root', root], { encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

// Each case runs the script (tsx + the TypeScript compiler): generous on a loaded machine.
describe('scripts/check-cycles.ts', { timeout: 120_000 }, () => {
  let dir: TempDir;
  beforeEach(() => {
    dir = tempDir('check-cycles-');
    mkdirSync(dir.file('src'));
    writeFileSync(dir.file('package.json'), '{ "type": "module" }\n');
    writeFileSync(
      dir.file('tsconfig.json'),
      JSON.stringify({
        compilerOptions: { strict: true, module: 'nodenext', types: [], skipLibCheck: true },
        include: ['src'],
      }),
    );
    writeFileSync(
      dir.file('src/shape.ts'),
      "import { area } from './area.js';\nexport interface Shape { w: number }\nexport const unit = area({ w: 1 });\n",
    );
    writeFileSync(dir.file('src/leaf.ts'), 'export const one = 1;\n');
  });
  afterEach(() => {
    dir.remove();
  });

  it('finds a circle closed by a type-only import', () => {
    writeFileSync(
      dir.file('src/area.ts'),
      "import type { Shape } from './shape.js';\nexport const area = (s: Shape) => s.w;\n",
    );
    const run = checkCycles(dir.path);
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('import cycle: src/area.ts <-> src/shape.ts');
    expect(run.stdout).toContain('cycles: 1 among 3 files');
  });

  it('passes the same files without the circle', () => {
    writeFileSync(
      dir.file('src/area.ts'),
      "import { one } from './leaf.js';\nexport const area = (s: { w: number }) => s.w * one;\n",
    );
    const run = checkCycles(dir.path);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('cycles: 0 among 3 files');
  });
});
