/**
 * The protocol trace end to end, with the daemon as a child process:
 * `serve --trace` logs one decoded line per message (JSON on stdout),
 * `--trace-file` captures the same session, and `vfio-user-ts trace` prints
 * the capture again, line for line as --trace logged it, filtered by command
 * or region; a size limit ends a capture with a note.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { VfioUserClient } from '../../client/index.js';
import { PciIrq, PciRegion } from '../../protocol/constants.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { runDaemon, runToExit, type DaemonProcess } from './daemon-process.js';

// Each test starts several processes (tsx compiles on start): slow on a loaded machine.
vi.setConfig({ testTimeout: 120_000 });

const READY = /Or boot a throwaway Linux guest[^\n]*\n.*vfio-user-ts vm/;

let dir: TempDir;
const daemons: DaemonProcess[] = [];
beforeEach(() => {
  dir = tempDir('vfu-trace-');
});
afterEach(async () => {
  for (const d of daemons.splice(0)) {
    d.kill('SIGKILL');
    await d.exited;
  }
  dir.remove();
});

/** A GPIO card served with the trace flags given; resolves once it is ready. */
async function serveGpio(traceFlags: string[]): Promise<{ daemon: DaemonProcess; socket: string }> {
  const socket = dir.file('gpio.sock');
  const daemon = runDaemon([
    'serve',
    '--log-format',
    'json',
    ...traceFlags,
    '--device',
    'gpio',
    '--socket',
    socket,
    '--control',
    'none',
  ]);
  daemons.push(daemon);
  await daemon.waitFor(READY);
  return { daemon, socket };
}

/** What a driver does first, then a register read and write of BAR2, an access past its end, and goodbye. */
async function session(socket: string): Promise<void> {
  const client = await VfioUserClient.connect(socket, { timeoutMs: 5000 });
  try {
    await client.getDeviceInfo();
    await client.getIrqInfo(PciIrq.INTX);
    await client.enableDevice({ io: true });
    await client.regionRead(PciRegion.BAR2, 0, 1);
    await client.regionWrite(PciRegion.BAR2, 0, Uint8Array.of(0xa5));
    await expect(client.regionRead(PciRegion.BAR2, 6, 4)).rejects.toMatchObject({ code: 'EINVAL' });
  } finally {
    client.close();
  }
}

/** The decoded message lines of a JSON log (msg of each debug line that has a cmd). */
function tracedLines(stdout: string): { msg: string; cmd: string; conn: number; device: string; error?: string }[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { level: number; msg: string; cmd?: string; conn: number; device: string })
    .filter((r) => r.level === 20 && r.cmd !== undefined) as never;
}

describe('vfio-user-ts serve --trace and --trace-file', () => {
  it('logs every message decoded, captures the session, and trace prints it again', async () => {
    const capture = dir.file('session.jsonl');
    const { daemon, socket } = await serveGpio(['--trace', '--trace-file', capture, '--trace-raw-bytes', '16']);
    await session(socket);
    await daemon.waitFor(/client disconnected/);
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);

    const logged = tracedLines(daemon.stdout());
    // A slow handler's line ends with its time (' [1.2 ms]'): not part of what is compared here.
    const msgs = logged.map((l) => l.msg.replace(/ \[\d+\.\d ms\]$/, ''));
    expect(msgs[0]).toMatch(/^VERSION #\d+ major=0 minor=0 caps=\{"capabilities":\{.*\}\} -> caps=\{"capabilities":/);
    expect(msgs).toContainEqual(
      expect.stringMatching(/^DEVICE_GET_INFO #\d+ argsz=16 -> flags=RESET\|PCI regions=9 irqs=5$/),
    );
    expect(msgs).toContainEqual(
      expect.stringMatching(
        /^DEVICE_GET_IRQ_INFO #\d+ index=INTX argsz=16 -> count=1 flags=EVENTFD\|MASKABLE\|AUTOMASKED$/,
      ),
    );
    expect(msgs).toContainEqual(
      expect.stringMatching(/^REGION_WRITE #\d+ region=config offset=0x4 count=2 data=0[57]00 -> ok$/),
    );
    expect(msgs).toContainEqual(
      expect.stringMatching(/^REGION_READ #\d+ region=BAR2 offset=0x0 count=1 -> data=[0-9a-f]{2}$/),
    );
    expect(msgs).toContainEqual(
      expect.stringMatching(/^REGION_WRITE #\d+ region=BAR2 offset=0x0 count=1 data=a5 -> ok$/),
    );
    const failed = logged.find((l) => l.error !== undefined);
    expect(failed).toMatchObject({ cmd: 'REGION_READ', error: 'EINVAL', device: 'gpio0' });
    expect(typeof failed?.conn).toBe('number');
    expect(failed?.msg).toMatch(/^REGION_READ #\d+ region=BAR2 offset=0x6 count=4 -> EINVAL \(.+\)( \[\d+\.\d ms\])?$/);

    // The capture: a header, then JSON records with the raw bytes asked for.
    const lines = readFileSync(capture, 'utf8').trim().split('\n');
    expect(JSON.parse(lines[0]!)).toMatchObject({ format: 'vfio-user-ts-trace', version: 1, writer: /^vfio-user-ts / });
    const records = lines.slice(1).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records[0]).toMatchObject({ kind: 'state', dev: 'gpio0', state: 'version' });
    const version = records.find((r) => r.cmd === 'VERSION') as { kind: string; raw: { request: string } };
    expect(version.kind).toBe('message');
    expect(version.raw.request).toMatch(/^01000[0-9a-f]{27}\.\.\.\(\+\d+\)$/);
    expect(records.at(-1)).toMatchObject({ kind: 'state', state: 'closed', reason: 'client disconnected' });

    // `trace` prints every line --trace logged, in order.
    const printed = await runToExit(['trace', capture]);
    expect(printed.code).toBe(0);
    expect(printed.stdout).toMatch(/^# capture started \S+ by vfio-user-ts /);
    const messageLines = printed.stdout
      .split('\n')
      .filter((l) => /^\s+\d+\.\d{3} gpio0#\d+ /.test(l))
      .map((l) => l.replace(/^\s+\d+\.\d{3} gpio0#\d+ /, '').replace(/ \[\d+\.\d ms\]$/, ''))
      .filter((l) => !l.startsWith('connection '));
    expect(messageLines).toEqual(msgs);
    expect(printed.stdout).toMatch(/ gpio0#\d+ connection closed \(client disconnected\)\n/);

    // Filters: a command and a region.
    const bar2Reads = await runToExit(['trace', capture, '--command', 'region_read', '--region', 'bar2']);
    const shown = bar2Reads.stdout.split('\n').filter((l) => l.includes(' gpio0#'));
    expect(shown).toHaveLength(2);
    for (const l of shown) expect(l).toMatch(/REGION_READ #\d+ region=BAR2 /);
    const config = await runToExit(['trace', capture, '--region', 'CONFIG', '--command', 'region_write,get_info']);
    expect(config.stdout.split('\n').filter((l) => l.includes(' gpio0#'))).toEqual([
      expect.stringMatching(/REGION_WRITE #\d+ region=config offset=0x4 /),
    ]);
    const json = await runToExit(['trace', capture, '--json', '--command', 'version']);
    const versions = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { cmd: string; reply: { caps: string } });
    expect(versions).toHaveLength(1);
    expect(JSON.parse(versions[0]!.reply.caps)).toMatchObject({ capabilities: { max_msg_fds: 16 } });
  });

  it('a size limit ends the capture with a note that trace shows', async () => {
    const capture = dir.file('small.jsonl');
    const { daemon, socket } = await serveGpio(['--trace-file', capture, '--trace-max-bytes', '2048']);
    await session(socket);
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    // Without --trace nothing is logged per message.
    expect(daemon.stdout()).not.toMatch(/"cmd":"REGION_READ"/);
    const text = readFileSync(capture, 'utf8');
    expect(text.length).toBeLessThanOrEqual(2048);
    const last = JSON.parse(text.trim().split('\n').at(-1)!) as Record<string, unknown>;
    expect(last).toMatchObject({ kind: 'end', reason: 'size limit of 2048 bytes reached' });
    const printed = await runToExit(['trace', capture]);
    expect(printed.code).toBe(0);
    expect(printed.stdout).toMatch(/# capture ended early: size limit of 2048 bytes reached, \d+ records dropped\n$/);
  });
});

describe('vfio-user-ts trace: bad input', () => {
  it('names a bad filter, a file that is no capture, a missing file', async () => {
    const notCapture = dir.file('x.jsonl');
    writeFileSync(notCapture, '{"hello":1}\n');
    const badCommand = await runToExit(['trace', notCapture, '--command', 'region_reed']);
    expect(badCommand.code).toBe(2);
    expect(badCommand.stderr).toContain('--command: no command is called "region_reed"');
    const badRegion = await runToExit(['trace', notCapture, '--region', 'BAR9']);
    expect(badRegion.code).toBe(2);
    expect(badRegion.stderr).toContain('--region: "BAR9" is no region');
    const wrong = await runToExit(['trace', notCapture]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('not a vfio-user-ts capture (format is undefined)');
    const missing = await runToExit(['trace', dir.file('none.jsonl')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('ENOENT');
    const noFile = await runToExit(['serve', '--trace-max-bytes', '1M']);
    expect(noFile.code).toBe(2);
    expect(noFile.stderr).toContain('--trace-max-bytes: needs --trace-file');
  });
});
