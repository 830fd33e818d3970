/**
 * `vfio-user-ts serve --watch` as a child process: the example device
 * module (examples/reloadable-device.ts, copied to a temp folder with its
 * ANSWER moved to a local import) is rewritten while a client stays
 * connected; the client sees the new code with the old state, on the same
 * connection. Modules that do not import, throw in their factory or refuse
 * the state leave the running device serving and log why.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../client/index.js';
import { PciRegion } from '../../protocol/constants.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { ROOT, runDaemon, type DaemonProcess } from './daemon-process.js';

const EXAMPLE = readFileSync(join(ROOT, 'examples', 'reloadable-device.ts'), 'utf8');
const Reg = { ANSWER: 0x00, SCRATCH: 0x04, WRITES: 0x08 } as const;

let dir: TempDir;
let daemon: DaemonProcess;
let client: VfioUserClient | undefined;

/** The module, with ANSWER imported from ./answer.ts (a local import the watcher follows). */
function writeModule(source = EXAMPLE): void {
  const moved = source.replace(
    /export const ANSWER = [^;]+;/,
    "import { ANSWER } from './answer.js';\nexport { ANSWER };",
  );
  if (moved === source && source === EXAMPLE) throw new Error('the example no longer declares ANSWER');
  writeFileSync(dir.file('reloadable.ts'), moved);
}

function writeAnswer(value: number): void {
  writeFileSync(dir.file('answer.ts'), `export const ANSWER = 0x${value.toString(16)};\n`);
}

/** Resolves once stdout has `count` lines matching `pattern` (the daemon logs one JSON record a line). */
async function logged(pattern: RegExp, count: number): Promise<string[]> {
  for (let i = 0; i < 600; i++) {
    const lines = daemon
      .stdout()
      .split('\n')
      .filter((l) => pattern.test(l));
    if (lines.length >= count) return lines;
    if (daemon.child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no ${count} lines matching ${pattern}:\n${daemon.stdout()}\n${daemon.stderr()}`);
}

async function read(offset: number): Promise<number> {
  const bytes = await client!.regionRead(PciRegion.BAR0, offset, 4);
  return new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
}

beforeEach(async () => {
  dir = tempDir('vfu-reload-');
  writeAnswer(0x2a2a0001);
  writeModule();
  const socket = dir.file('reloadable.sock');
  daemon = runDaemon([
    'serve',
    '--watch',
    '--log-format',
    'json',
    '--device',
    dir.file('reloadable.ts'),
    '--socket',
    socket,
  ]);
  await daemon.waitFor(/watching reloadable\.ts/);
  client = await VfioUserClient.connect(socket, { timeoutMs: 5000 });
  await client.regionWrite(PciRegion.BAR0, Reg.SCRATCH, Uint8Array.of(0x44, 0x33, 0x22, 0x11));
});

afterEach(async () => {
  client?.close();
  daemon.kill('SIGTERM');
  await daemon.exited;
  dir.remove();
});

describe('serve --watch', () => {
  it('reloads the module and its local imports under the connected client, keeping the state', async () => {
    expect(await read(Reg.ANSWER)).toBe(0x2a2a0001);
    writeAnswer(0x2a2a0002); // a local import changes
    await logged(/"device module reloaded"/, 1);
    expect(await read(Reg.ANSWER)).toBe(0x2a2a0002);
    writeModule(EXAMPLE.replace('regs.writes + 1', 'regs.writes + 100')); // the module itself changes
    await logged(/"device module reloaded"/, 2);
    expect(await read(Reg.SCRATCH)).toBe(0x11223344); // state carried twice
    expect(await read(Reg.WRITES)).toBe(1);
    await client!.regionWrite(PciRegion.BAR0, Reg.SCRATCH, Uint8Array.of(1, 0, 0, 0));
    expect(await read(Reg.WRITES)).toBe(101); // the new code runs
    expect(daemon.stdout()).not.toMatch(/client disconnected|"reset"/);
  });

  it('a module that does not import, throws or refuses the state leaves the running device', async () => {
    writeModule(EXAMPLE.replace('export default function', 'export default funktion'));
    let lines = await logged(/device module reload failed/, 1);
    expect(lines[0]).toMatch(/"level":40.*\(import\)/);
    writeModule(EXAMPLE.replace('const regs = {', "throw new Error('not today');\n  const regs = {"));
    lines = await logged(/device module reload failed/, 2);
    expect(lines[1]).toMatch(/\(construct\).*not today/);
    writeModule(EXAMPLE.replace("kind: 'reloadable-example'", "kind: 'another-example'"));
    lines = await logged(/device module reload failed/, 3);
    expect(lines[2]).toMatch(/\(state\).*another-example/);
    expect(await read(Reg.ANSWER)).toBe(0x2a2a0001);
    expect(await read(Reg.SCRATCH)).toBe(0x11223344);
    writeAnswer(0x2a2a0003);
    writeModule(); // fixed: the next change takes
    await logged(/"device module reloaded"/, 1);
    expect(await read(Reg.ANSWER)).toBe(0x2a2a0003);
    expect(await read(Reg.SCRATCH)).toBe(0x11223344);
  });
});
