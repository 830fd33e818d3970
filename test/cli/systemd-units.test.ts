/**
 * The example systemd units (examples/systemd) pass `systemd-analyze verify`
 * (skipped where systemd-analyze is not installed), with the daemon's node
 * put in for /usr/bin/node: unknown keys, bad values and a missing executable
 * all fail it.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { ROOT } from './daemon-process.js';

const UNITS = join(ROOT, 'examples', 'systemd');
const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
const haveAnalyze = analyze.status === 0;

let dir: TempDir | undefined;
afterEach(() => dir?.remove());

// Under CI nothing may skip: without systemd-analyze the tests run and fail.
describe.skipIf(!haveAnalyze && !process.env.CI)('example systemd units', () => {
  it('verify cleanly (template instantiated as vfio-user-ts@disks)', () => {
    dir = tempDir('vfu-units-');
    const files: string[] = [];
    for (const name of readdirSync(UNITS).filter((n) => /\.(service|socket)$/.test(n))) {
      const text = readFileSync(join(UNITS, name), 'utf8').replaceAll('/usr/bin/node', process.execPath);
      const file = join(dir.path, name.replace('@.', '@disks.'));
      writeFileSync(file, text);
      files.push(file);
    }
    expect(files.map((f) => f.slice(dir!.path.length + 1)).sort()).toEqual([
      'vfio-user-ts.service',
      'vfio-user-ts.socket',
      'vfio-user-ts@disks.service',
    ]);
    const run = spawnSync('systemd-analyze', ['verify', '--man=no', ...files], { encoding: 'utf8', cwd: dir.path });
    expect(run.stderr + run.stdout).toBe('');
    expect(run.status).toBe(0);
  });
});
