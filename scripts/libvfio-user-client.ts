/**
 * Run libvfio-user's own samples/client, unmodified, against our twin of its
 * samples/server (examples/libvfio-user-sample-server.ts), migration to a
 * second server included:
 *
 *   npm run interop:libvfio-user -- --client /path/to/libvfio-user/build/samples/client
 *
 * Build the client yourself from a libvfio-user checkout OUTSIDE this
 * repository (meson setup build && ninja -C build), at the commit before
 * 850ded8 (from 850ded8 on its sample server no longer starts, and the client
 * still expects the sample's 0x3000-byte BAR1; docs/writing-a-device.md).
 *
 * What it does, in a fresh temporary directory:
 * - `server`: a wrapper that starts our twin (the client starts its migration
 *   destination as `<its own directory>/server -v <socket>_migrated`), and
 *   `client`: a symlink to the given binary, so that its directory is this one;
 * - starts the source twin (`server -v sample.sock`) and the client under
 *   scripts/subreaper.c (compiled here with cc): the client forks, and its
 *   PARENT becomes the destination server while the child goes on as the
 *   client, so only a subreaper learns the client's exit status;
 * - prints the client's transcript and a summary: exit statuses, the
 *   MIG_DATA_READs the source answered, the MIG_DATA_WRITEs the destination
 *   took, the dirty pages the client found, interrupts and DMA rounds.
 *
 * Options: --timeout SECONDS (default 120), --keep (keep the directory, with
 * both servers' JSON logs), --json (the summary as JSON on the last line).
 * Exits 0 when the client and both servers exited 0 and the counts are the
 * ones the sample pair gives.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const repo = resolve(import.meta.dirname, '..');

interface Args {
  client: string;
  timeoutSeconds: number;
  keep: boolean;
  json: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { client: '', timeoutSeconds: 120, keep: false, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--client') args.client = argv[++i] ?? '';
    else if (a === '--timeout') args.timeoutSeconds = Number(argv[++i]);
    else if (a === '--keep') args.keep = true;
    else if (a === '--json') args.json = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!args.client) throw new Error('usage: libvfio-user-client --client PATH [--timeout S] [--keep] [--json]');
  if (!existsSync(args.client)) throw new Error(`no client at ${args.client}`);
  if (!(args.timeoutSeconds > 0)) throw new Error('--timeout needs a positive number of seconds');
  return args;
}

/** How one process ended, as subreaper.c reports it. */
interface Ended {
  pid: number;
  comm: string;
  how: 'exit' | 'signal';
  code: number;
}

function readReport(path: string): Ended[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [pid, comm, how, code] = line.split(' ');
      return { pid: Number(pid), comm: comm ?? '?', how: how === 'signal' ? 'signal' : 'exit', code: Number(code) };
    });
}

/** Collect a child's output; resolve with its exit code (or 128 + signal). */
function collect(child: ChildProcess): { out: string[]; err: string[]; done: Promise<number> } {
  const out: string[] = [];
  const err: string[] = [];
  child.stdout?.on('data', (b: Buffer) => out.push(b.toString()));
  child.stderr?.on('data', (b: Buffer) => err.push(b.toString()));
  const done = new Promise<number>((res) => {
    child.once('close', (code, signal) => res(code ?? 128 + (signal ? 15 : 0)));
  });
  return { out, err, done };
}

/** The JSON log lines of a text (our servers log pino JSON), and the other lines. */
function split(text: string): { json: Record<string, unknown>[]; plain: string[] } {
  const json: Record<string, unknown>[] = [];
  const plain: string[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('{')) {
      try {
        json.push(JSON.parse(line) as Record<string, unknown>);
        continue;
      } catch {
        // not ours: keep it as text
      }
    }
    if (line.length > 0) plain.push(line);
  }
  return { json, plain };
}

function countRequests(lines: Record<string, unknown>[], cmd: string): { ok: number; failed: number } {
  let ok = 0;
  let failed = 0;
  for (const l of lines) {
    // The connection's trace lines (debug level): one per client request, `result` 'ok' or the errno.
    if (l.cmd !== cmd || l.result === undefined) continue;
    if (l.result === 'ok') ok++;
    else failed++;
  }
  return { ok, failed };
}

function stateChanges(lines: Record<string, unknown>[]): string[] {
  return lines.filter((l) => l.msg === 'MIG_DEVICE_STATE').map((l) => `${String(l.from)}->${String(l.to)}`);
}

async function waitForSocket(path: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > until) throw new Error(`the source server did not create ${path}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'libvfio-user-client-'));
  const socket = join(dir, 'sample.sock');
  const tsx = join(repo, 'node_modules', '.bin', 'tsx');
  const twin = join(repo, 'examples', 'libvfio-user-sample-server.ts');
  const tsconfig = join(repo, 'tsconfig.json');

  symlinkSync(realpathSync(args.client), join(dir, 'client'));
  writeFileSync(
    join(dir, 'server'),
    `#!/bin/sh\n# libvfio-user's samples/client starts "<its directory>/server -v PATH": our twin.\nexec '${tsx}' --tsconfig '${tsconfig}' '${twin}' "$@"\n`,
    { mode: 0o755 },
  );
  const reaper = join(dir, 'subreaper');
  const cc = spawnSync('cc', ['-O2', '-o', reaper, join(repo, 'scripts', 'subreaper.c')], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc scripts/subreaper.c failed: ${cc.stderr}`);
  const reportPath = join(dir, 'exits.txt');

  // Debug logs: one JSON line per message, which is what the counts come from.
  const source = spawn(join(dir, 'server'), ['-v', socket], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const src = collect(source);
  await waitForSocket(socket, 30_000);

  // Line-buffered stdout (stdbuf), so that nothing is lost if the client aborts.
  const stdbuf = spawnSync('sh', ['-c', 'command -v stdbuf'], { encoding: 'utf8' }).stdout.trim();
  const clientCommand = [...(stdbuf ? [stdbuf, '-oL'] : []), join(dir, 'client'), socket];
  const started = Date.now();
  const run = spawn(reaper, [reportPath, ...clientCommand], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group: a timeout ends the whole tree
  });
  const cli = collect(run);
  const timeout = { hit: false };
  const timer = setTimeout(() => {
    timeout.hit = true;
    try {
      process.kill(-run.pid!, 'SIGKILL');
    } catch {
      // gone already
    }
    source.kill('SIGKILL');
  }, args.timeoutSeconds * 1000);
  const reaperStatus = await cli.done;
  // The source exits by itself once its client is gone; one that never had a client would wait forever.
  const sourceLeftRunning = await Promise.race([
    src.done.then(() => false),
    new Promise<boolean>((r) => setTimeout(() => r(true), 5000)),
  ]);
  if (sourceLeftRunning) source.kill('SIGTERM');
  const sourceStatus = await src.done;
  clearTimeout(timer);
  const seconds = (Date.now() - started) / 1000;

  const ended = readReport(reportPath);
  // The client is the process still named after the binary; the direct child exec'd the destination server.
  const clientEnd = ended.find((e) => e.comm === 'client');
  const clientExit = clientEnd ? (clientEnd.how === 'exit' ? clientEnd.code : 128 + clientEnd.code) : undefined;
  const clientText = split(cli.out.join(''));
  const clientErr = split(cli.err.join(''));
  const srcOut = split(src.out.join(''));
  const srcLog = split(src.err.join(''));
  const destLog = clientErr.json; // the destination inherits the client's stderr

  const reads = countRequests(srcLog.json, 'MIG_DATA_READ');
  const writes = countRequests(destLog, 'MIG_DATA_WRITE');
  const bitmaps = clientText.plain.filter((l) => l.includes('get_dirty_bitmap:'));
  const dirty = bitmaps.filter((l) => !/\t0$/.test(l));
  const summary = {
    seconds,
    timedOut: timeout.hit,
    clientExit: clientExit ?? null,
    destinationServerExit: reaperStatus,
    sourceServerExit: sourceStatus,
    sourceServerKilled: sourceLeftRunning,
    migDataReadsAtSource: reads.ok,
    migDataReadsFailed: reads.failed,
    migDataWritesAtDestination: writes.ok,
    migDataWritesFailed: writes.failed,
    /** Each SET of MIG_DEVICE_STATE, as the servers logged it. */
    stateChanges: { source: stateChanges(srcLog.json), destination: stateChanges(destLog) },
    dirtyBitmapReports: bitmaps.length,
    dirtyPages: dirty.length,
    intxSeenByClient: clientText.plain.filter((l) => l.includes('INTx triggered')).length,
    dmaRounds: {
      source: srcOut.plain.filter((l) => l === 'doing dma io').length,
      destination: clientText.plain.filter((l) => l === 'doing dma io').length,
    },
    dmaMessages: {
      source: srcLog.json.filter((l) => l.msg === 'send DMA request').length,
      destination: destLog.filter((l) => l.msg === 'send DMA request').length,
    },
    processes: ended,
  };

  console.log(`# libvfio-user samples/client (${realpathSync(args.client)}) against our twin, in ${dir}`);
  console.log('# client stdout:');
  for (const l of clientText.plain) console.log(l);
  console.log('# client stderr (without the destination server JSON log lines):');
  for (const l of clientErr.plain) console.log(l);
  console.log('# source server stdout:');
  for (const l of srcOut.plain) console.log(l);
  console.log('# summary:');
  const expected =
    !timeout.hit &&
    clientExit === 0 &&
    reaperStatus === 0 &&
    sourceStatus === 0 &&
    !sourceLeftRunning &&
    reads.ok === 25 && // pre-copy 12 x 1 KiB, stop-copy 12 x 1 KiB + 8 bytes
    writes.ok === 13 &&
    dirty.length === 2 &&
    summary.intxSeenByClient === 2;
  for (const [k, v] of Object.entries(summary)) if (k !== 'processes') console.log(`${k}: ${JSON.stringify(v)}`);
  for (const e of ended) console.log(`process ${e.pid} (${e.comm}): ${e.how} ${e.code}`);
  console.log(expected ? 'RESULT: ok' : 'RESULT: FAILED');
  if (args.keep) {
    writeFileSync(join(dir, 'source-server.log'), src.err.join(''));
    writeFileSync(join(dir, 'client-stderr.log'), cli.err.join(''));
    writeFileSync(join(dir, 'client-stdout.log'), cli.out.join(''));
    console.log(`# kept ${dir}`);
  } else {
    rmSync(dir, { recursive: true, force: true });
  }
  if (args.json) console.log(JSON.stringify(summary));
  return expected ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(2);
  },
);
