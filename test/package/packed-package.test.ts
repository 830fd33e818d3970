/**
 * The package as a user gets it: the tarball `npm pack` makes ships what its
 * "files" and "exports" promise and nothing of the repository's own tooling;
 * it installs into a scratch project with no compiler (the prebuilt addon, no
 * node-gyp); a device written in TypeScript type-checks against the installed
 * types (strict, nodenext); the installed CLI serves it as .ts and compiled as
 * .js, with pino-pretty logs; the installed client drives both; the installed
 * `vfio-user-ts vm` answers.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, packedTarball, type PackedTarball } from './packed-tarball.js';
import { BUILD_TOOLS, ScratchApp, type Output } from './scratch-app.js';

const PREBUILD = 'prebuilds/linux-x64/vfio-user-ts.uv1.glibc.node';
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const FIXTURES = join(ROOT, 'test', 'package', 'fixtures');

let tarball: PackedTarball;
let app: ScratchApp;
let install: Output;

beforeAll(async () => {
  tarball = await packedTarball();
  app = new ScratchApp();
  install = await app.run('npm', ['install', tarball.file, '--foreground-scripts', '--no-audit', '--no-fund']);
}, 600_000);

afterAll(() => {
  app.remove();
});

describe('the packed package', () => {
  it('ships dist, the prebuilt addon, its sources for a rebuild, docs, examples and LICENSE; no tests, tooling or source maps', () => {
    const files = new Set(tarball.files);
    for (const file of [
      'LICENSE',
      'README.md',
      'package.json',
      'dist/cli/main.js',
      'dist/server/index.d.ts',
      'dist/guest-kit/index.js',
      PREBUILD,
      'binding.gyp',
      'native/src/addon.cc',
      'docs/writing-a-device.md',
      'examples/minimal-device.ts',
    ])
      expect(files, file).toContain(file);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      exports: Record<string, string | { types: string; default: string }>;
      bin: Record<string, string>;
    };
    for (const target of Object.values(pkg.exports).flatMap((t) => (typeof t === 'string' ? [t] : Object.values(t))))
      expect(files, target).toContain(target.replace(/^\.\//, ''));
    for (const bin of Object.values(pkg.bin)) expect(files, bin).toContain(bin);
    const unwanted = tarball.files.filter((f) =>
      /^(test|bench|scripts|\.ci|build|node_modules)\/|^dist\/(test|bench|examples)\/|\.map$|^tsconfig|^(eslint|vitest|knip)\.|^\./.test(
        f,
      ),
    );
    expect(unwanted).toEqual([]);
    expect(readFileSync(join(ROOT, 'LICENSE'), 'utf8')).toMatch(/BSD 3-Clause License[\s\S]*the vfio-user-ts authors/);
  });

  it('installs with node and npm only: no compiler on PATH, node-gyp never ran, the prebuild is what loads', async () => {
    for (const tool of BUILD_TOOLS) expect((await app.run('sh', ['-c', `command -v ${tool}`])).code, tool).not.toBe(0);
    expect(install.code, install.stderr + install.stdout).toBe(0);
    expect(install.stdout + install.stderr).not.toMatch(/gyp (info|ERR)/);
    const installed = app.path('node_modules/vfio-user-ts');
    expect(existsSync(join(installed, 'build'))).toBe(false);
    expect(statSync(join(installed, PREBUILD)).isFile()).toBe(true);
    const loaded = await app.run('node', [
      '-e',
      "console.log(require('node-gyp-build').resolve(require('path').dirname(require.resolve('vfio-user-ts/package.json'))))",
    ]);
    expect(loaded.stdout.trim(), loaded.stderr).toBe(join(installed, PREBUILD));
  });

  it('type-checks a TypeScript device and a client script against the installed types (strict, nodenext)', async () => {
    for (const file of ['my-device.ts', 'regs.ts', 'drive.ts'])
      app.write(file, readFileSync(join(FIXTURES, file), 'utf8'));
    app.write(
      'tsconfig.json',
      JSON.stringify({
        compilerOptions: {
          strict: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          lib: ['es2023'],
          outDir: 'out',
          rootDir: '.',
          // The installed declarations are checked too, not only the app's files.
          skipLibCheck: false,
          // The checker is the repository's (the app has no dev tools): so are its Node types.
          typeRoots: [join(ROOT, 'node_modules', '@types')],
          types: ['node'],
        },
        include: ['*.ts'],
      }),
    );
    const tsc = await app.run('node', [TSC, '-p', 'tsconfig.json']);
    expect(tsc.code, tsc.stdout + tsc.stderr).toBe(0);
    expect(existsSync(app.path('out/my-device.js'))).toBe(true);
  });

  it('serves the device as .ts and as compiled .js under the installed CLI; the installed client drives both; it inspects, traces and scrapes them', async () => {
    const tsSock = app.path('ts.sock');
    const jsSock = app.path('js.sock');
    const capture = app.path('session.jsonl');
    const metricsPort = 20_000 + (process.pid % 20_000);
    const bin = app.path('node_modules/.bin/vfio-user-ts');
    // The bin npm linked, as `npx vfio-user-ts` runs it (npx itself does not pass SIGTERM on).
    const serve = app.start(app.path('node_modules/.bin/vfio-user-ts'), [
      'serve',
      '--log-format',
      'pretty',
      '--device',
      './my-device.ts',
      '--socket',
      tsSock,
      '--device',
      './out/my-device.js',
      '--socket',
      jsSock,
      '--trace-file',
      capture,
      '--metrics',
      `127.0.0.1:${metricsPort}`,
    ]);
    let stdout = '';
    let stderr = '';
    serve.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    serve.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => serve.on('close', (code) => resolve(code)));
    try {
      await waitFor(
        () => [tsSock, jsSock].every((s) => existsSync(s) && statSync(s).isSocket()),
        () => serve.exitCode !== null,
        60_000,
      ).catch((err: unknown) => {
        throw new Error(`serve: ${(err as Error).message}\nstdout:\n${stdout}\nstderr:\n${stderr}`);
      });
      const drive = await app.run('node', ['out/drive.js', tsSock, jsSock]);
      expect(drive.code, drive.stderr).toBe(0);
      const lines = drive.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      for (const [i, socketPath] of [tsSock, jsSock].entries())
        expect(lines[i]).toEqual({
          socketPath,
          vendor: 0x1b36,
          device: 0x0005,
          magic: 0xfeedc0de,
          scratch: 0x600df00d,
        });
      expect(lines[2]).toEqual({ guestKitModules: ['nvme', 'gpio-pci-idio-16'] });

      // The installed CLI inspects the served device like lspci -vvv.
      const inspect = await app.run(bin, ['inspect', tsSock]);
      expect(inspect.code, inspect.stderr).toBe(0);
      expect(inspect.stdout).toContain('[1b36:0005]');
      // Its metrics, scraped: the connections the client and inspect made are counted.
      const scrape = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(scrape).toMatch(/^vfio_user_connections_total\{[^}]*\} [1-9]/m);
    } finally {
      serve.kill('SIGTERM');
    }
    expect(await exited, stdout + stderr).toBe(0);
    // --log-format pretty: pino-pretty (a dependency) formats the records; no raw JSON.
    const logs = stripVTControlCharacters(stdout);
    expect(logs).toMatch(/^\[[\d:.]+\] INFO \(\d+\): device ready$/m);
    expect(logs).not.toMatch(/^\{"level"/m);
    // The capture of the session, printed again by the installed CLI, filtered to one command.
    const trace = await app.run(bin, ['trace', capture, '--command', 'region_read']);
    expect(trace.code, trace.stderr).toBe(0);
    expect(trace.stdout).toMatch(/ REGION_READ #\d+ region=BAR0 offset=0x0 count=4 -> data=/);
    expect(trace.stdout).not.toMatch(/ REGION_WRITE /);
  }, 120_000);

  it('has the vm subcommand', async () => {
    const help = await app.run('npx', ['--no', 'vfio-user-ts', 'vm', '--help']);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: vfio-user-ts vm /);
  });
});

/** Polls `ready` every 50 ms; rejects when `failed` turns true or after `timeoutMs`. */
async function waitFor(ready: () => boolean, failed: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (failed()) throw new Error('the process exited first');
    if (Date.now() > deadline) throw new Error(`not ready after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
