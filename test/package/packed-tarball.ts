/**
 * `npm pack` of this checkout, as a release would run it (prepack: prebuildify
 * builds the addon into prebuilds/linux-x64; prepare: tsc builds dist/), in a
 * staging copy of the sources so the suite's own build/ and dist/ are never
 * rebuilt under the other tests' feet.
 *
 * The tarball is cached by a hash of everything that goes into it, under
 * $VFIO_USER_TS_CACHE or ~/.cache/vfio-user-ts/package-test/: CI's second
 * pass (Node 24) installs the tarball its first pass (Node 20) packed, so the
 * one N-API prebuild is what both Node versions load.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { cacheDir } from '../../guest-kit/kit.js';

const run = promisify(execFile);

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** What `npm pack` needs from the checkout: the build's inputs and the "files" it ships. */
const PACK_INPUTS = [
  'package.json',
  'README.md',
  'LICENSE',
  'binding.gyp',
  'tsconfig.json',
  'tsconfig.build.json',
  'native',
  'protocol',
  'trace',
  'server',
  'client',
  'devices',
  'cli',
  'guest-kit',
  'docs',
  'examples',
];
/** Tools whose version changes the tarball (the addon's headers, the prebuild, the compiled JavaScript). */
const TOOLS = ['node-addon-api', 'prebuildify', 'typescript'];

export interface PackedTarball {
  /** The .tgz file. */
  file: string;
  /** Bytes of the .tgz, of its contents, and the paths in it. */
  size: number;
  unpackedSize: number;
  files: string[];
  /** True when this run packed it (false: from the cache). */
  fresh: boolean;
}

function inputFiles(): string[] {
  const out: string[] = [];
  const walk = (path: string): void => {
    if (statSync(path).isDirectory()) for (const entry of readdirSync(path).sort()) walk(join(path, entry));
    else out.push(path);
  };
  for (const input of PACK_INPUTS) walk(join(ROOT, input));
  return out;
}

function inputsHash(): string {
  const hash = createHash('sha256');
  for (const file of inputFiles()) hash.update(`${relative(ROOT, file)}\0`).update(readFileSync(file));
  for (const tool of TOOLS) {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'node_modules', tool, 'package.json'), 'utf8')) as {
      version: string;
    };
    hash.update(`${tool}@${version}\0`);
  }
  return hash.digest('hex').slice(0, 16);
}

/** The tarball of this checkout, packed now or taken from the cache. */
export async function packedTarball(): Promise<PackedTarball> {
  const cache = join(cacheDir(), 'package-test');
  const key = inputsHash();
  const manifest = join(cache, key, 'pack.json');
  if (existsSync(manifest)) return { ...(JSON.parse(readFileSync(manifest, 'utf8')) as PackedTarball), fresh: false };

  // One tarball at a time in the cache: an older checkout's is no use.
  rmSync(cache, { recursive: true, force: true });
  const stage = mkdtempSync(join(tmpdir(), 'vfu-pack-'));
  const out = `${join(cache, key)}.partial`;
  try {
    for (const input of PACK_INPUTS) cpSync(join(ROOT, input), join(stage, input), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(stage, 'node_modules'));
    mkdirSync(out, { recursive: true });
    // npm prints the lifecycle scripts' output (compiler lines) before its JSON report.
    const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', out], {
      cwd: stage,
      // node-gyp compiles the prebuild on every core.
      env: { ...process.env, JOBS: 'max' },
      maxBuffer: 64 << 20,
    });
    const reports = JSON.parse(stdout.slice(stdout.search(/^\[$/m))) as {
      filename: string;
      size: number;
      unpackedSize: number;
      files: { path: string }[];
    }[];
    const report = reports.at(0);
    if (!report) throw new Error(`npm pack printed no report:\n${stdout}`);
    const packed: PackedTarball = {
      file: join(cache, key, report.filename),
      size: report.size,
      unpackedSize: report.unpackedSize,
      files: report.files.map((f) => f.path).sort(),
      fresh: true,
    };
    writeFileSync(join(out, 'pack.json'), JSON.stringify(packed, null, 2));
    renameSync(out, join(cache, key));
    return packed;
  } finally {
    rmSync(stage, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
}
