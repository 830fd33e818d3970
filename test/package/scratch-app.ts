/**
 * A scratch project that depends on the packed tarball, as a user's would,
 * on a PATH that has node, npm, npx and sh (npm runs scripts through it) and
 * nothing else: no C/C++ compiler, no make, no python, so the install cannot
 * have compiled anything.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * What the commands keep of this process's environment: how this machine
 * reaches the npm registry (a proxy and its CA, npm's registry and config
 * files; .ci/run names the machine's global npmrc for its Node 24 pass, whose
 * npm would otherwise look for one beside that node binary). Nothing else.
 */
const NETWORK_ENV =
  /^(https?_proxy|no_proxy|NODE_EXTRA_CA_CERTS|SSL_CERT_(FILE|DIR)|npm_config_(registry|cafile|ca|strict_ssl|proxy|https_proxy|noproxy|globalconfig|userconfig|cache))$/i;

/** Tools a native build would need; the scratch PATH has none of them. */
export const BUILD_TOOLS = ['cc', 'gcc', 'c++', 'g++', 'make', 'python3', 'python'];

/** npm's own CLI script (npm-cli.js), of the npm that runs this suite. */
function npmCli(): string {
  const fromNpm = process.env.npm_execpath;
  if (fromNpm && /npm-cli\.js$/.test(fromNpm)) return fromNpm;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    try {
      return realpathSync(join(dir, 'npm'));
    } catch {
      // not in this one
    }
  }
  throw new Error('npm not found on PATH');
}

export interface Output {
  code: number | null;
  stdout: string;
  stderr: string;
}

export class ScratchApp {
  readonly dir = mkdtempSync(join(tmpdir(), 'vfu-app-'));
  /** node (the one running this test), npm, npx, sh: the whole PATH of what runs here. */
  readonly bin = join(this.dir, '.bin-node-npm-only');

  constructor() {
    mkdirSync(this.bin);
    const npm = npmCli();
    symlinkSync(process.execPath, join(this.bin, 'node'));
    symlinkSync(npm, join(this.bin, 'npm'));
    symlinkSync(join(dirname(npm), 'npx-cli.js'), join(this.bin, 'npx'));
    symlinkSync('/bin/sh', join(this.bin, 'sh'));
    this.write(
      'package.json',
      JSON.stringify({ name: 'my-device-app', version: '1.0.0', private: true, type: 'module' }),
    );
  }

  /** The environment of every command: this PATH, HOME (npm's cache and config), the network settings. */
  get env(): NodeJS.ProcessEnv {
    const network = Object.entries(process.env).filter(([name]) => NETWORK_ENV.test(name));
    return {
      ...Object.fromEntries(network),
      PATH: this.bin,
      HOME: process.env.HOME,
      TMPDIR: tmpdir(),
      LANG: 'C.UTF-8',
    };
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  write(name: string, text: string): void {
    writeFileSync(this.path(name), text);
  }

  /** Runs a command in the app to its end (never rejects: check `code`). */
  async run(file: string, args: string[], timeoutMs = 120_000): Promise<Output> {
    try {
      const { stdout, stderr } = await run(file, args, {
        cwd: this.dir,
        env: this.env,
        timeout: timeoutMs,
        maxBuffer: 64 << 20,
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number | string; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : null, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  }

  /** Starts a long-running command in the app, output piped. */
  start(file: string, args: string[]): ChildProcess {
    return spawn(file, args, { cwd: this.dir, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
