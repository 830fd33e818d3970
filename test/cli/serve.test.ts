/**
 * The daemon as a child process: devices from quick flags, the QEMU line,
 * clients one after another, the gpio subcommand, SIGTERM (socket files
 * removed, exit 0), a stale socket file replaced and a live one not stolen.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../client/index.js';
import { gpioControlRequest } from '../../devices/gpio/control.js';
import { qemuDeviceOption } from '../../cli/qemu-hint.js';
import { DmaMapFlag, PciIrq, PciRegion } from '../../protocol/constants.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { ROOT, runDaemon, runToExit, type DaemonProcess } from './daemon-process.js';

const DEMO = join(ROOT, 'test', 'cli', 'fixtures', 'demo-device.ts');
const STUCK = join(ROOT, 'test', 'cli', 'fixtures', 'stuck-device.ts');
const READY = /Or boot a throwaway Linux guest[^\n]*\n.*vfio-user-ts vm/;

let dir: TempDir;
const daemons: DaemonProcess[] = [];
beforeEach(() => {
  dir = tempDir('vfu-d-');
});
afterEach(async () => {
  for (const d of daemons.splice(0)) {
    d.kill('SIGKILL');
    await d.exited;
  }
  dir.remove();
});

function start(args: string[]): DaemonProcess {
  const d = runDaemon(['serve', '--log-format', 'json', ...args]);
  daemons.push(d);
  return d;
}

/** Negotiate, read the demo device's magic register, disconnect. */
async function readMagic(socketPath: string): Promise<number> {
  const client = await VfioUserClient.connect(socketPath, { timeoutMs: 5000 });
  try {
    const bytes = await client.regionRead(PciRegion.BAR0, 0, 4);
    return new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
  } finally {
    client.close();
  }
}

/** Poll `condition` (the daemon frees a client's fds on its own schedule), at most 5 s. */
async function waitUntil(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !condition(); i++) await new Promise((r) => setTimeout(r, 50));
}

/** The value of `read` once it stops changing (three equal polls in a row). */
async function steady(read: () => number): Promise<number> {
  let last = read();
  for (let same = 0, i = 0; same < 3 && i < 100; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const now = read();
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return last;
}

/** A socket file whose server was killed: nobody accepts on it. */
async function makeStaleSocket(path: string): Promise<void> {
  const child = spawn(
    process.execPath,
    ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
}

describe('vfio-user-ts serve', { timeout: 60_000 }, () => {
  it('serves devices from quick flags, prints how to connect QEMU, and stops cleanly on SIGTERM', async () => {
    const gpioSock = dir.file('g.sock');
    const demoSock = dir.file('m.sock');
    const d = start([
      '--device',
      'gpio',
      '--socket',
      gpioSock,
      '--device',
      DEMO,
      '--socket',
      demoSock,
      '--name',
      'demo',
    ]);
    await d.waitFor(READY);
    expect(d.stderr()).toContain(qemuDeviceOption(gpioSock));
    expect(d.stderr()).toContain(qemuDeviceOption(demoSock));
    expect(d.stderr()).toContain('-object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem');
    await d.waitFor(/"device":"demo".*"msg":"device ready"/);
    expect(statSync(gpioSock).isSocket()).toBe(true);

    // One client after another on the same device.
    expect(await readMagic(demoSock)).toBe(0x1234abcd);
    expect(await readMagic(demoSock)).toBe(0x1234abcd);

    // The gpio subcommand reaches the card's control socket.
    const control = `${gpioSock}.control`;
    const set = await runToExit(['gpio', 'set', '--control', control, 'IIN3=1']);
    expect(set.stderr).toBe('');
    expect(set.code).toBe(0);
    expect((await gpioControlRequest(control, { op: 'get' })).inputs).toBe(1 << 3);

    // A client still attached when the signal comes is dropped.
    const attached = await VfioUserClient.connect(demoSock, { timeoutMs: 5000 });
    d.kill('SIGTERM');
    expect(await d.exited).toEqual({ code: 0, signal: null });
    await attached.closed;
    attached.close();
    for (const path of [gpioSock, control, demoSock]) expect(existsSync(path), path).toBe(false);
    expect(d.stdout()).toMatch(/"msg":"all devices stopped"/);
  });

  it('serves Prometheus metrics (--metrics), and stdout stays one JSON record per line with the banner on stderr', async () => {
    const gpioSock = dir.file('g.sock');
    const demoSock = dir.file('m.sock');
    // No --log-format: "auto", and stdout is a pipe here, as under a log shipper.
    const d = runDaemon(
      ['serve', '-d', 'gpio', '-s', gpioSock, '-d', DEMO, '-s', demoSock, '--name', 'demo'].concat([
        '-d',
        'nvme',
        '-s',
        dir.file('n.sock'),
        '--size',
        '1M',
        '--metrics',
        '127.0.0.1:0',
      ]),
    );
    daemons.push(d);
    await d.waitFor(READY);
    const url = (await d.waitFor(/Metrics \(Prometheus\): (http:\/\/127\.0\.0\.1:\d+\/metrics)/))[1]!;
    expect(await readMagic(demoSock)).toBe(0x1234abcd);
    expect(await readMagic(demoSock)).toBe(0x1234abcd);
    expect((await runToExit(['gpio', 'set', '--control', `${gpioSock}.control`, 'IIN3=1'])).code).toBe(0);

    const text = await (await fetch(url)).text();
    const has = (line: string): void => expect(text.split('\n')).toContain(line);
    has('demo_magic_reads_total{device="demo"} 2'); // the module's own metric
    has('vfio_user_messages_total{device="demo",command="VERSION"} 2');
    has('vfio_user_connections_total{device="demo"} 2');
    has('vfio_user_connection_state{device="demo",state="idle"} 1');
    has('vfio_user_gpio_line_changes_total{device="gpio0",line="IIN3"} 1');
    has('vfio_user_connection_state{device="nvme0",state="idle"} 1');
    expect(text).toContain('# TYPE vfio_user_nvme_command_seconds histogram');

    d.kill('SIGTERM');
    expect(await d.exited).toEqual({ code: 0, signal: null });
    const lines = d.stdout().trimEnd().split('\n');
    expect(lines.length).toBeGreaterThan(5);
    for (const line of lines) expect(() => JSON.parse(line) as unknown, line).not.toThrow();
    expect(d.stderr()).toContain('vfio-user-ts is serving:');
    expect(d.stderr()).not.toMatch(/^\{/m);
  });

  it('runs the built-in default (NVMe on a sparse 1 GiB image + GPIO) under ./run and ./data', async () => {
    const d = runDaemon(['serve', '--log-format', 'json'], { cwd: dir.path });
    daemons.push(d);
    await d.waitFor(READY);
    const image = join(dir.path, 'data', 'nvme0.img');
    const nvmeSock = join(dir.path, 'run', 'nvme0.sock');
    const gpioSock = join(dir.path, 'run', 'gpio0.sock');
    expect(statSync(image).size).toBe(2 ** 30);
    expect(statSync(image).blocks * 512).toBeLessThan(2 ** 20); // sparse
    expect(d.stderr()).toContain(qemuDeviceOption(nvmeSock));
    expect(d.stderr()).toContain(qemuDeviceOption(gpioSock));
    expect(d.stderr()).toContain(`vfio-user-ts vm --socket ${nvmeSock} --socket ${gpioSock}\n`);

    const client = await VfioUserClient.connect(nvmeSock, { timeoutMs: 5000 });
    const classCode = await client.regionRead(PciRegion.CONFIG, 0x09, 3);
    expect([...classCode]).toEqual([0x02, 0x08, 0x01]); // NVM Express
    client.close();

    d.kill('SIGINT');
    expect(await d.exited).toEqual({ code: 0, signal: null });
    expect(existsSync(nvmeSock)).toBe(false);
    expect(existsSync(gpioSock)).toBe(false);
    expect(existsSync(image)).toBe(true);
  });

  it('keeps no fd of a client that left (DMA memfd, eventfds, socket)', async () => {
    const sock = dir.file('g.sock');
    const d = start(['--device', 'gpio', '--socket', sock, '--control', 'none']);
    await d.waitFor(READY);
    const fds = (): number => readdirSync(`/proc/${d.child.pid}/fd`).length;
    const session = async (whileOpen?: () => void): Promise<void> => {
      const client = await VfioUserClient.connect(sock, { timeoutMs: 5000 });
      const memory = client.createGuestMemory(1 << 20);
      await client.dmaMap({ addr: 0x100000n, backing: memory, flags: DmaMapFlag.READ | DmaMapFlag.WRITE });
      await client.enableIrqs(PciIrq.INTX, 1);
      whileOpen?.();
      client.close();
    };
    await session(); // warm-up: lazily created threads and handles
    const baseline = await steady(fds);
    let during = 0;
    for (let i = 0; i < 3; i++) await session(() => (during = fds()));
    expect(during).toBeGreaterThan(baseline); // the client's socket, memfd and eventfd
    await waitUntil(() => fds() === baseline);
    expect(fds()).toBe(baseline);
  });

  it('replaces a stale socket file but never takes over a live one', async () => {
    const sock = dir.file('s.sock');
    await makeStaleSocket(sock);
    expect(statSync(sock).isSocket()).toBe(true);

    const first = start(['--device', DEMO, '--socket', sock]);
    await first.waitFor(READY);
    expect(await readMagic(sock)).toBe(0x1234abcd);

    const second = start(['--device', DEMO, '--socket', sock]);
    const exit = await second.exited;
    expect(exit.code).toBe(1);
    expect(second.stderr()).toContain(`cannot listen on ${sock}`);
    expect(second.stderr()).toMatch(/served by another live process/);

    // The first daemon still owns and serves the socket.
    expect(await readMagic(sock)).toBe(0x1234abcd);
    first.kill('SIGINT');
    expect((await first.exited).code).toBe(0);
    expect(existsSync(sock)).toBe(false);
  });

  it('ends a shutdown that hangs: socket files removed, exit 1', async () => {
    const sock = dir.file('stuck.sock');
    const gpioSock = dir.file('g.sock');
    const d = start(['--device', STUCK, '--socket', sock, '--device', 'gpio', '--socket', gpioSock]);
    await d.waitFor(READY);
    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(1);
    expect(d.stderr()).toMatch(/shutdown took longer than \d+ ms/);
    expect(existsSync(sock)).toBe(false);
    expect(existsSync(gpioSock)).toBe(false);
  });
});
