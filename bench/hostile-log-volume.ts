/**
 * How much log a hostile client costs: start the daemon (`vfio-user-ts serve`,
 * default log level, JSON) with one NVMe and one GPIO device, run the protocol
 * fuzzer against each socket (half the messages each, unless --device picks
 * one), stop the daemon, and count the bytes and lines it logged, by message.
 *
 *   npx tsx bench/hostile-log-volume.ts --messages 2000000 [--seed S] [--device nvme|gpio|both] [--out FILE]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runFuzz } from '../test/protocol/fuzzer.js';

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '200000' },
    seed: { type: 'string', default: '1' },
    device: { type: 'string', default: 'both' },
    out: { type: 'string' },
  },
});
const messages = Number(values.messages);
const seed = Number(values.seed);
const dir = mkdtempSync(join(tmpdir(), 'hostile-log-'));
const logPath = values.out ?? join(dir, 'daemon.log');
const nvmeSock = join(dir, 'nvme.sock');
const gpioSock = join(dir, 'gpio.sock');
const out = openSync(logPath, 'w');
const daemon = spawn(
  process.execPath,
  [
    '--import',
    'tsx',
    'cli/main.ts',
    'serve',
    '--log-format',
    'json',
    '--device',
    'nvme',
    '--socket',
    nvmeSock,
    '--size',
    '64M',
    '--device',
    'gpio',
    '--socket',
    gpioSock,
    '--control',
    'none',
  ],
  { stdio: ['ignore', out, 'pipe'] },
);
daemon.stderr?.resume();
for (let i = 0; i < 300 && !(existsSync(nvmeSock) && existsSync(gpioSock)); i++)
  await new Promise((r) => setTimeout(r, 100));
const started = Date.now();
const targets = values.device === 'both' ? [nvmeSock, gpioSock] : [values.device === 'gpio' ? gpioSock : nvmeSock];
for (const socketPath of targets) {
  const stats = await runFuzz({
    socketPath,
    messages: Math.ceil(messages / targets.length),
    seed,
    onProgress: (s) => {
      if (s.messages % 100_000 < 1000) process.stderr.write(`  ${socketPath}: ${s.messages} messages\n`);
    },
  });
  process.stderr.write(`${socketPath}: ${JSON.stringify(stats)}\n`);
}
const seconds = (Date.now() - started) / 1000;
daemon.kill('SIGTERM');
await new Promise((r) => daemon.once('exit', r));
closeSync(out);
const text = readFileSync(logPath, 'utf8');
const lines = text.split('\n').filter((l) => l.length > 0);
const byMsg = new Map<string, { lines: number; bytes: number }>();
for (const l of lines) {
  let key = '(not JSON)';
  try {
    const j = JSON.parse(l) as { msg?: string; level?: number };
    key = `${j.level ?? '?'} ${(j.msg ?? '').replace(/^[\w-]+: \d+ more suppressed$/, '<kind>: N more suppressed')}`;
  } catch {
    // keep the placeholder
  }
  const e = byMsg.get(key) ?? { lines: 0, bytes: 0 };
  e.lines++;
  e.bytes += Buffer.byteLength(l) + 1;
  byMsg.set(key, e);
}
console.log(
  `${messages} hostile messages in ${seconds.toFixed(0)} s: ${Buffer.byteLength(text)} bytes, ${lines.length} lines of log`,
);
console.log(`per minute: ${(((Buffer.byteLength(text) / seconds) * 60) / 1024).toFixed(1)} KiB`);
for (const [k, v] of [...byMsg].sort((a, b) => b[1].bytes - a[1].bytes)) console.log(`  ${v.bytes}\t${v.lines}\t${k}`);
if (values.out === undefined) rmSync(dir, { recursive: true, force: true });
