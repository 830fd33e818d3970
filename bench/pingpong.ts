/**
 * The raw baseline for the protocol benchmark: bench/pingpong.c, compiled with
 * the system `cc` into a temp dir, as an echo server (same reply sizes as a
 * vfio-user server) and as the measuring client for any server.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const here = dirname(fileURLToPath(import.meta.url));

export interface LatencyStats {
  p50_ns: number;
  p99_ns: number;
  ops_per_s: number;
}

/** A compiled pingpong binary in its own temp dir (remove() deletes both). */
export interface Pingpong {
  readonly bin: string;
  readonly dir: string;
  remove(): void;
}

export function compilePingpong(): Pingpong {
  const dir = mkdtempSync(join(tmpdir(), 'vfu-bench-'));
  const bin = join(dir, 'pingpong');
  execFileSync('cc', ['-O2', '-o', bin, join(here, 'pingpong.c')], { stdio: 'inherit' });
  return { bin, dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** argv prefix pinning a command to CPU 0 (`taskset -c 0`), or nothing. */
export function pinned(pin: boolean, argv: string[]): [string, string[]] {
  return pin ? ['taskset', ['-c', '0', ...argv]] : [argv[0]!, argv.slice(1)];
}

/** Spawn a server process and resolve once it prints `ready` on stdout. */
export function spawnReady(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], env });
    const lines = createInterface({ input: child.stdout });
    const onExit = (code: number | null) =>
      reject(new Error(`${cmd} ${args.join(' ')} exited (${code}) before it was ready`));
    child.once('exit', onExit);
    child.once('error', reject);
    lines.on('line', (line) => {
      if (line.trim() === 'ready') {
        child.off('exit', onExit);
        resolve(child);
      }
    });
  });
}

/** Stop a spawned server and wait for it to exit. */
export function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** The raw echo server on `socketPath`, optionally pinned to CPU 0. */
export function startEcho(pp: Pingpong, socketPath: string, pin: boolean): Promise<ChildProcess> {
  const [cmd, args] = pinned(pin, [pp.bin, 'echo', socketPath]);
  return spawnReady(cmd, args);
}

/** Run the C client against `socketPath`: VERSION, then `iters` 4-byte config REGION_READs. */
export function measure(pp: Pingpong, socketPath: string, pin: boolean, iters: number, warmup: number): LatencyStats {
  const [cmd, args] = pinned(pin, [pp.bin, 'client', socketPath, String(iters), String(warmup)]);
  const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out.trim()) as LatencyStats;
}
