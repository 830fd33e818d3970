/**
 * `serve --watch` reload figures: the daemon (a child process, as in
 * test/cli/hot-reload.test.ts) serves examples/reloadable-device.ts while a
 * client reads a register in a loop; the module file is rewritten
 * `iterations` times (default 10). Reported: the reload time the daemon
 * logs (import + swap), how long client requests were held during the
 * swap (daemon side), and the slowest register read the client saw during
 * the whole run (client side, next to its median).
 *
 *   npx tsx bench/hot-reload.ts        (or npm run bench -- --only hot-reload)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { VfioUserClient } from '../client/index.js';
import { PciRegion } from '../protocol/constants.js';
import { ROOT, runDaemon } from '../test/cli/daemon-process.js';
import { tempDir } from '../test/helpers/temp.js';

interface Stats {
  min: number;
  median: number;
  max: number;
}

function stats(values: number[]): Stats {
  const s = [...values].sort((a, b) => a - b);
  return { min: s[0] ?? NaN, median: s[Math.floor(s.length / 2)] ?? NaN, max: s.at(-1) ?? NaN };
}

export async function hotReloadBench(
  opts: { iterations?: number | undefined } = {},
): Promise<Record<string, string | number>[]> {
  const iterations = opts.iterations ?? 10;
  const example = readFileSync(join(ROOT, 'examples', 'reloadable-device.ts'), 'utf8');
  const dir = tempDir('vfu-reload-bench-');
  const modulePath = dir.file('reloadable.ts');
  const socket = dir.file('reloadable.sock');
  writeFileSync(modulePath, example);
  const daemon = runDaemon(['serve', '--watch', '--log-format', 'json', '--device', modulePath, '--socket', socket]);
  const reloaded = (): { ms: number; heldMs: number }[] =>
    daemon
      .stdout()
      .split('\n')
      .filter((l) => l.includes('"device module reloaded"'))
      .map((l) => JSON.parse(l) as { ms: number; heldMs: number });
  let client: VfioUserClient | undefined;
  try {
    await daemon.waitFor(/watching reloadable\.ts/);
    client = await VfioUserClient.connect(socket, { timeoutMs: 5000 });
    const reads: number[] = [];
    /** Set to stop the client's read loop (an object: the loop reads it after each await). */
    const reading = { on: true };
    const loop = (async () => {
      while (reading.on) {
        const t0 = performance.now();
        await client.regionRead(PciRegion.BAR0, 0, 4);
        reads.push(performance.now() - t0);
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (let i = 1; i <= iterations; i++) {
      const answer = `0x2a2a${(i + 1).toString(16).padStart(4, '0')}`;
      writeFileSync(modulePath, example.replace('0x2a2a0001', answer));
      for (let t = 0; reloaded().length < i; t++) {
        if (t > 400) throw new Error(`reload ${i} not seen:\n${daemon.stdout()}\n${daemon.stderr()}`);
        await new Promise((r) => setTimeout(r, 25));
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    reading.on = false;
    await loop;
    const runs = reloaded();
    const reload = stats(runs.map((r) => r.ms));
    const held = stats(runs.map((r) => r.heldMs));
    const read = stats(reads);
    return [
      { bench: 'hot-reload', variant: 'reload (import + swap) ms', runs: runs.length, ...reload },
      { bench: 'hot-reload', variant: 'requests held (daemon) ms', runs: runs.length, ...held },
      { bench: 'hot-reload', variant: 'client register read ms', runs: reads.length, ...read },
    ];
  } finally {
    client?.close();
    daemon.kill('SIGTERM');
    await daemon.exited;
    dir.remove();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.table(await hotReloadBench());
}
