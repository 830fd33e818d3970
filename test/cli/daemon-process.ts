/**
 * Runs `vfio-user-ts` as a child process (through tsx, from the sources) and
 * watches its output, for the daemon tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MAIN = join(ROOT, 'cli', 'main.ts');
const TSX_LOADER = pathToFileURL(join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DaemonProcess {
  readonly child: ChildProcess;
  /** Everything written so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the first match in stdout+stderr (as it grows); rejects with the output on exit or timeout. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  readonly exited: Promise<Exit>;
  kill(signal?: NodeJS.Signals): void;
}

/** Start `vfio-user-ts ...args` with `cwd` (default: the repository). */
export function runDaemon(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): DaemonProcess {
  const child = spawn(process.execPath, ['--import', TSX_LOADER, MAIN, ...args], {
    cwd: options.cwd ?? ROOT,
    // tsx reads tsconfig.json from the cwd: name ours, whose "paths" map 'vfio-user-ts'
    // (as the built-in devices import it) to the sources. Without it a daemon started
    // elsewhere would load the devices' server code from dist/, a second (stale) copy.
    env: { ...process.env, LOG_LEVEL: 'info', TSX_TSCONFIG_PATH: join(ROOT, 'tsconfig.json'), ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const listeners = new Set<() => void>();
  const changed = (): void => {
    for (const l of listeners) l();
  };
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    changed();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
    changed();
  });
  const exited = new Promise<Exit>((resolveExit) => {
    child.on('exit', (code, signal) => {
      // Let the pipes drain before reporting.
      setImmediate(() => {
        resolveExit({ code, signal });
        changed();
      });
    });
  });
  let done = false;
  void exited.then(() => {
    done = true;
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    kill: (signal = 'SIGTERM') => {
      child.kill(signal);
    },
    waitFor(pattern, timeoutMs = 40_000) {
      return new Promise((resolveMatch, reject) => {
        const check = (): void => {
          const m = (out + '\n' + err).match(pattern);
          if (m) finish(() => resolveMatch(m));
          else if (done)
            finish(() => reject(new Error(`daemon exited before ${pattern}\nstdout:\n${out}\nstderr:\n${err}`)));
        };
        const timer = setTimeout(
          () => finish(() => reject(new Error(`timed out waiting for ${pattern}\nstdout:\n${out}\nstderr:\n${err}`))),
          timeoutMs,
        );
        const finish = (f: () => void): void => {
          clearTimeout(timer);
          listeners.delete(check);
          f();
        };
        listeners.add(check);
        check();
      });
    },
  };
}

/** Run to completion (for commands that exit by themselves). */
export async function runToExit(
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<Exit & { stdout: string; stderr: string }> {
  const d = runDaemon(args, options);
  const exit = await d.exited;
  return { ...exit, stdout: d.stdout(), stderr: d.stderr() };
}
