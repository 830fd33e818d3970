/**
 * Runs one guest: writes its initramfs to a private temp dir, starts QEMU (TCG)
 * through the kit, reads the serial console line by line and QEMU's stderr, and
 * enforces a hard timeout: startGuest/runGuest, which boot.ts exports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildInitramfs } from './initramfs.js';
import { ensureKit, type Kit } from './kit.js';

/** How to boot one guest. */
export interface GuestOptions {
  /** Each becomes a `vfio-user-pci` device on that UNIX socket (JSON -device syntax; id default vfu<N>). */
  devices: { socketPath: string; id?: string }[];
  /** busybox sh script run after boot (modules already loaded). */
  script: string;
  /** Kernel modules to load, e.g. ['nvme'] or ['gpio-pci-idio-16']; dependencies are resolved (each module's depends=, what modules.dep holds). */
  modules?: string[];
  /**
   * Default true: guest RAM is a shared memfd, sealed as QEMU does by default
   * (DMA through mmap). 'unsealed': the same memfd with seal=off. false: plain
   * -m (DMA via DMA_READ/WRITE messages).
   */
  sharedMemory?: boolean | 'unsealed';
  /** Guest RAM, default 512. */
  memoryMiB?: number;
  /** vCPUs, default 1. */
  smp?: number;
  /** Hard timeout after which QEMU is killed, default 60000. */
  timeoutMs?: number;
  /** Extra QEMU arguments (e.g. QEMU's own -device nvme for benchmarks). */
  qemuArgs?: string[];
  /** Extra files in the initramfs: path (relative to /) -> content. */
  files?: Record<string, string | Uint8Array>;
}

/** A running guest. */
export interface Guest {
  /**
   * Resolves with the first complete serial-console line (past or future) matching
   * `pattern`; rejects on timeout (default: the guest's timeoutMs) or exit, serial log attached.
   */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Writes to the guest console (QEMU's serial stdin). */
  write(text: string): void;
  /** Settles when QEMU exits. Resolves on any exit (check `code`/`results`); never rejects. */
  readonly exited: Promise<GuestResult>;
  /** Kills QEMU (SIGKILL). */
  kill(): void;
}

/** What a finished guest left behind. */
export interface GuestResult {
  /** QEMU's exit code (0 after the guest's poweroff), null if killed. */
  code: number | null;
  /** The whole serial console log, QEMU's stderr (lines prefixed `[qemu] `) and how it ended (`[vfio-user-ts] ...`). */
  serial: string;
  /** From serial lines `RESULT key=value`; `exit` is the script's exit status. */
  results: Record<string, string>;
}

/**
 * Kernel command line: serial console, quiet, no reboot loop, and skipping the
 * slowest boot work that a throwaway test guest does not need (crypto self-tests,
 * jitter-entropy sampling, BPF/tracing setup: about 35% of boot time under TCG).
 */
const KERNEL_CMDLINE = [
  'console=ttyS0',
  'panic=-1',
  'oops=panic',
  'quiet',
  'loglevel=4',
  'no_timer_check',
  'tsc=unstable',
  'i8042.noaux',
  'i8042.nokbd',
  'i8042.nopnp',
  'random.trust_cpu=on',
  'mitigations=off',
  'nokaslr',
  'cryptomgr.notests',
  'initcall_blacklist=jent_mod_init,bpf_tcp_ca_kfunc_init,trace_eval_init,depot_debugfs_init',
].join(' ');

/** A guest failure (timeout, QEMU error, missing GUEST-EXIT) with the whole serial log. */
export class GuestError extends Error {
  constructor(
    message: string,
    readonly serial: string,
  ) {
    super(`${message}\n----- serial console and QEMU stderr -----\n${serial}\n----- end -----`);
    this.name = 'GuestError';
  }
}

/** QEMU's arguments (after the kit's loader prefix) for `options`, booting `initrd`. */
export function qemuArguments(kit: Kit, options: GuestOptions, initrd: string, interactive = false): string[] {
  const mem = options.memoryMiB ?? 512;
  const shared = (options.sharedMemory ?? true) !== false;
  const smp = options.smp ?? 1;
  if (!Number.isInteger(mem) || mem < 64 || mem > 65536)
    throw new RangeError(`guest: memoryMiB must be an integer 64..65536, not ${mem}`);
  if (!Number.isInteger(smp) || smp < 1 || smp > 64)
    throw new RangeError(`guest: smp must be an integer 1..64, not ${smp}`);
  const args = [
    '-accel',
    'tcg',
    '-machine',
    shared ? 'q35,memory-backend=mem' : 'q35',
    '-m',
    `${mem}M`,
    '-smp',
    String(smp),
    '-nodefaults',
    '-no-user-config',
    '-no-reboot',
    '-net',
    'none',
    '-kernel',
    kit.kernel,
    '-initrd',
    initrd,
    '-append',
    KERNEL_CMDLINE,
  ];
  if (shared)
    args.push(
      '-object',
      `memory-backend-memfd,id=mem,size=${mem}M,share=on${options.sharedMemory === 'unsealed' ? ',seal=off' : ''}`,
    );
  // Interactive: the terminal is QEMU's (raw mode, Ctrl-A x quits); tests: plain pipes.
  args.push(...(interactive ? ['-nographic', '-serial', 'mon:stdio'] : ['-display', 'none', '-serial', 'stdio']));
  // JSON syntax: `socket` is a SocketAddress struct (and paths may contain commas).
  options.devices.forEach((d, i) => {
    args.push(
      '-device',
      JSON.stringify({ driver: 'vfio-user-pci', id: d.id ?? `vfu${i}`, socket: { type: 'unix', path: d.socketPath } }),
    );
  });
  args.push(...(options.qemuArgs ?? []));
  return args;
}

/** Writes the initramfs for `options` into a fresh temp dir; returns its path and the dir. */
export function prepareInitrd(kit: Kit, options: GuestOptions, keepRunning = false): { dir: string; initrd: string } {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-user-ts-guest-'));
  const initrd = join(dir, 'initramfs.cpio');
  writeFileSync(
    initrd,
    buildInitramfs(kit, { script: options.script, modules: options.modules, files: options.files, keepRunning }),
  );
  return { dir, initrd };
}

/** QEMUs still running: killed when this process exits, so a crashed test never leaves a guest behind. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** Our own death kills QEMU too (even on SIGKILL of this process), when util-linux's setpriv is there. */
function withParentDeathSignal(file: string, args: string[]): [string, string[]] {
  const setpriv = '/usr/bin/setpriv';
  return existsSync(setpriv) ? [setpriv, ['--pdeathsig', 'KILL', '--', file, ...args]] : [file, args];
}

const MAX_LINES = 40_000;
const KEEP_HEAD_LINES = 2_000;

interface Waiter {
  pattern: RegExp;
  resolve: (m: RegExpMatchArray) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** Boots a guest; resolves once QEMU is started (the guest boots in the background). */
export async function startGuest(options: GuestOptions): Promise<Guest> {
  const kit = await ensureKit();
  const timeoutMs = options.timeoutMs ?? 60_000;
  if (!(timeoutMs > 0)) throw new RangeError(`guest: timeoutMs must be > 0, not ${timeoutMs}`);
  qemuArguments(kit, options, '/dev/null'); // validates the options before anything is written
  const { dir, initrd } = prepareInitrd(kit, options);
  const cmd = kit.qemu();
  const [file, args] = withParentDeathSignal(cmd.file, [...cmd.args, ...qemuArguments(kit, options, initrd)]);
  const child = spawn(file, args, { env: { ...process.env, ...cmd.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  live.add(child);
  const lines: string[] = [];
  const log: string[] = [];
  const waiters = new Set<Waiter>();
  let ended: string | undefined;
  let timedOut = false;
  const serial = (): string => log.join('\n');

  // A guest that prints forever must not eat the host's memory: keep the head and the tail.
  const bounded = (list: string[], line: string): void => {
    list.push(line);
    if (list.length > MAX_LINES)
      list.splice(KEEP_HEAD_LINES, list.length - MAX_LINES / 2, '[vfio-user-ts] ... serial lines dropped ...');
  };
  const onLine = (line: string): void => {
    bounded(lines, line);
    bounded(log, line);
    for (const w of waiters) {
      const m = line.match(w.pattern);
      if (m) {
        waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(m);
      }
    }
  };
  let partial = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).replace(/\r/g, '').split('\n');
    partial = parts.pop() ?? '';
    for (const p of parts) onLine(p);
  });
  let errPartial = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (errPartial + chunk).split('\n');
    errPartial = parts.pop() ?? '';
    for (const p of parts) bounded(log, `[qemu] ${p}`);
  });
  child.stdin.on('error', () => undefined);

  const hardTimer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const exited = new Promise<GuestResult>((resolve) => {
    let finished = false;
    const finish = (code: number | null, why: string): void => {
      if (finished) return;
      finished = true;
      clearTimeout(hardTimer);
      if (partial) onLine(partial);
      if (errPartial) log.push(`[qemu] ${errPartial}`);
      partial = errPartial = '';
      live.delete(child);
      ended = timedOut ? `guest timed out after ${timeoutMs} ms (QEMU killed)` : why;
      log.push(`[vfio-user-ts] ${ended}`);
      for (const w of waiters) {
        clearTimeout(w.timer);
        w.reject(new GuestError(`${ended}; no line matched ${w.pattern}`, serial()));
      }
      waiters.clear();
      rmSync(dir, { recursive: true, force: true });
      const results: Record<string, string> = {};
      for (const l of lines) {
        const m = /^RESULT ([^=\s]+)=(.*)$/.exec(l);
        if (m) {
          const [, key = '', value = ''] = m;
          results[key] = value;
        }
      }
      resolve({ code, serial: serial(), results });
    };
    child.on('error', (err) => finish(null, `QEMU failed to start: ${err.message}`));
    child.on('close', (code, signal) =>
      finish(code, `QEMU exited (code ${code}${signal ? `, signal ${signal}` : ''})`),
    );
  });

  return {
    exited,
    waitForLine(pattern, waitMs = timeoutMs) {
      const seen = lines.map((l) => l.match(pattern)).find((m) => m);
      if (seen) return Promise.resolve(seen);
      if (ended) return Promise.reject(new GuestError(`${ended}; no line matched ${pattern}`, serial()));
      return new Promise((resolve, reject) => {
        const w: Waiter = {
          pattern,
          resolve,
          reject,
          timer: setTimeout(() => {
            waiters.delete(w);
            reject(new GuestError(`no serial line matched ${pattern} within ${waitMs} ms`, serial()));
          }, waitMs),
        };
        waiters.add(w);
      });
    },
    write(text) {
      if (!ended && child.stdin.writable) child.stdin.write(text);
    },
    kill() {
      if (!ended) child.kill('SIGKILL');
    },
  };
}

/**
 * Boots a guest and waits for it to power off. Rejects (serial log attached) on
 * timeout, a QEMU error, or a guest that never reached GUEST-EXIT. The script's
 * exit status is in `results.exit`.
 */
export async function runGuest(options: GuestOptions): Promise<GuestResult> {
  const guest = await startGuest(options);
  const result = await guest.exited;
  if (!/^GUEST-EXIT \d+$/m.test(result.serial) || result.code !== 0) {
    const ended = /^\[vfio-user-ts\] (.*)$/m.exec(result.serial)?.[1] ?? 'QEMU ended';
    const why = result.code === 0 ? `guest stopped before GUEST-EXIT (kernel panic?); ${ended}` : ended;
    throw new GuestError(why, result.serial);
  }
  return result;
}
