/**
 * `serve --takeover` between real processes (cli/takeover): a new daemon
 * takes the listening sockets and saved states of an idle one, which exits;
 * the data written through the old one is read through the new one. A new
 * process that fails (state refused), or a takeover asked while a client is
 * attached, leaves the old daemon serving.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../client/index.js';
import { gpioControlRequest } from '../../devices/gpio/control.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { expectOk, GPA, Layout, NvmeGuest } from '../devices/nvme-driver.js';
import { runDaemon, type DaemonProcess } from './daemon-process.js';

let dir: TempDir;
const daemons: DaemonProcess[] = [];
const guests: NvmeGuest[] = [];

beforeEach(() => {
  dir = tempDir('vfu-takeover-');
});
afterEach(async () => {
  for (const g of guests.splice(0)) g.close();
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

/** An NVMe controller on a 16 MiB image and a GPIO card with its control socket (gpio.sock.control), in `dir`. */
function devices(size = '16M', image = 'disk.img'): string[] {
  return [
    ...['--device', 'nvme', '--socket', dir.file('nvme.sock'), '--disk', dir.file(image), '--size', size],
    ...['--device', 'gpio', '--socket', dir.file('gpio.sock')],
  ];
}

async function guest(): Promise<NvmeGuest> {
  const g = await NvmeGuest.connect(dir.file('nvme.sock'));
  guests.push(g);
  await g.enable();
  await g.createIoQueues();
  return g;
}

/** Write 4 KiB at LBA 8 through `g` (and leave it in the guest's DATA buffer). */
async function write4k(g: NvmeGuest, data: Uint8Array): Promise<void> {
  g.mem.set(data, Layout.DATA);
  expectOk(await g.io(g.rw(1, 1, 8, 8, GPA + BigInt(Layout.DATA))));
}

async function read4k(g: NvmeGuest): Promise<Uint8Array> {
  g.mem.fill(0, Layout.DATA, Layout.DATA + 4096);
  expectOk(await g.io(g.rw(2, 1, 8, 8, GPA + BigInt(Layout.DATA))));
  return g.mem.slice(Layout.DATA, Layout.DATA + 4096);
}

/** Open fds of a process, once the count stops changing (three equal polls in a row). */
async function fdCount(pid: number): Promise<number> {
  const read = (): number => readdirSync(`/proc/${pid}/fd`).length;
  let last = read();
  for (let same = 0, i = 0; same < 3 && i < 100; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const now = read();
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return last;
}

/** Connect a client and disconnect it, waiting until the daemon saw it go. */
async function disconnect(g: NvmeGuest, d: DaemonProcess): Promise<void> {
  const before = d.stdout().split('"client disconnected"').length;
  g.close();
  for (let i = 0; i < 100 && d.stdout().split('"client disconnected"').length === before; i++)
    await new Promise((r) => setTimeout(r, 50));
}

describe('serve --takeover', () => {
  it('takes over an idle daemon: same sockets, state loaded, the data written before is read after; the old exits 0', async () => {
    const old = start(devices());
    await old.waitFor(/"msg":"ready"/);
    const control = dir.file('vfio-user-ts.control');
    expect(statSync(control).mode & 0o777).toBe(0o600);
    const data = randomBytes(4096);
    const g = await guest();
    await write4k(g, data);
    await disconnect(g, old);

    const next = start([...devices(), '--takeover']);
    await next.waitFor(/takeover complete/);
    expect(await old.exited).toEqual({ code: 0, signal: null });
    expect(old.stdout()).toMatch(/handed over to the new process: exiting/);
    expect(next.stdout()).toMatch(/"device":"nvme0".*"takenOver":true/);
    expect(next.stdout()).toMatch(/"device":"gpio0".*"takenOver":true/);
    expect(existsSync(dir.file('nvme.sock'))).toBe(true);

    // The new process serves both sockets; the data is there.
    const again = await guest();
    expect(Buffer.from(await read4k(again)).equals(data)).toBe(true);
    const gpio = await VfioUserClient.connect(dir.file('gpio.sock'), { timeoutMs: 5000 });
    expect((await gpio.getDeviceInfo()).numRegions).toBeGreaterThan(0);
    gpio.close();
    // The GPIO card's control socket is the new process's (opened once the old one closed its own).
    expect((await gpioControlRequest(dir.file('gpio.sock.control'), { op: 'get' })).outputs).toBe(0);
    await disconnect(again, next);

    // The new process owns the socket files now: a stop removes them.
    next.kill('SIGTERM');
    expect((await next.exited).code).toBe(0);
    expect(existsSync(dir.file('nvme.sock'))).toBe(false);
    expect(existsSync(dir.file('gpio.sock.control'))).toBe(false);
  });

  it('with a changed configuration: a device dropped is stopped (its socket removed), a device added starts', async () => {
    const old = start(devices());
    await old.waitFor(/"msg":"ready"/);
    const nvmeOnly = devices().slice(0, 8);
    const added = ['--device', 'gpio', '--name', 'gpio1', '--socket', dir.file('gpio1.sock'), '--control', 'none'];
    const next = start([...nvmeOnly, ...added, '--takeover']);
    await next.waitFor(/takeover complete/);
    expect((await old.exited).code).toBe(0);
    expect(old.stdout()).toMatch(/"device":"gpio0".*stopped \(not in the new configuration\)/);
    expect(existsSync(dir.file('gpio.sock'))).toBe(false);
    expect(next.stdout()).toMatch(/"device":"nvme0".*"takenOver":true/);
    expect(next.stdout()).not.toMatch(/"device":"gpio1".*"takenOver":true/);
    const gpio1 = await VfioUserClient.connect(dir.file('gpio1.sock'), { timeoutMs: 5000 });
    gpio1.close();
    const g = await guest();
    expect(await g.reg(0x1c)).toBe(1); // CSTS.RDY after enable: the NVMe socket carried over is served
  });

  it('a new process that fails (its NVMe refuses the state) leaves the old daemon serving', async () => {
    const old = start(devices());
    await old.waitFor(/"msg":"ready"/);
    const data = randomBytes(4096);
    const g = await guest();
    await write4k(g, data);
    await disconnect(g, old);
    const fdsBefore = await fdCount(old.child.pid!);

    // Same name and socket, another namespace size: the saved state does not fit.
    const next = start([...devices('32M', 'other.img'), '--takeover']);
    expect((await next.exited).code).toBe(1);
    expect(next.stderr()).toMatch(/cannot load the state handed over/);
    expect(next.stderr()).toMatch(/takeover abandoned: the running daemon resumes and serves on/);
    await old.waitFor(/takeover failed in the new process: resumed, serving on/);
    // The copies of the listening sockets it sent, and the control connection, are closed again.
    expect(await fdCount(old.child.pid!)).toBe(fdsBefore);

    const again = await guest();
    expect(Buffer.from(await read4k(again)).equals(data)).toBe(true);
    expect(old.child.exitCode).toBe(null);
  });

  it('is refused while a client is attached (connected clients are not handed over yet); the client keeps working', async () => {
    const old = start(devices());
    await old.waitFor(/"msg":"ready"/);
    const g = await guest();
    const data = randomBytes(4096);

    const next = start([...devices(), '--takeover']);
    expect((await next.exited).code).toBe(1);
    expect(next.stderr()).toMatch(/refused the takeover: device nvme0 has a client attached/);
    await old.waitFor(/takeover refused: serving on/);
    await write4k(g, data);
    expect(Buffer.from(await read4k(g)).equals(data)).toBe(true);
  });

  it('fails when no daemon runs', async () => {
    const next = start([...devices(), '--takeover']);
    expect((await next.exited).code).toBe(1);
    expect(next.stderr()).toMatch(/no running daemon to take over at .*vfio-user-ts\.control/);
  });
});
