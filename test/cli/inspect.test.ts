/**
 * `vfio-user-ts inspect` as a process: against our NVMe and GPIO devices
 * served by the daemon, and against a tiny vfio-user server that shares no
 * code with ours (fixtures/tiny-server.ts). It reads without writing unless
 * --probe-bars, restores what probing wrote, and hangs up cleanly.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { VfioUserCommand } from '../../protocol/constants.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { runDaemon, runToExit, type DaemonProcess } from './daemon-process.js';
import { startTinyServer, type TinyServer } from './fixtures/tiny-server.js';

// Each test starts several processes (tsx compiles on start): slow on a loaded machine.
vi.setConfig({ testTimeout: 120_000 });

const READY = /Or boot a throwaway Linux guest[^\n]*\n.*vfio-user-ts vm/;

let dir: TempDir;
const daemons: DaemonProcess[] = [];
const servers: TinyServer[] = [];
beforeEach(() => {
  dir = tempDir('vfu-inspect-');
});
afterEach(async () => {
  for (const d of daemons.splice(0)) {
    d.kill('SIGKILL');
    await d.exited;
  }
  for (const s of servers.splice(0)) await s.close();
  dir.remove();
});

interface JsonReport {
  pci: { vendor: number; device: number; classCode: number; configSize: number };
  capabilities: { name: string; offset: number; extended: boolean; fields: Record<string, unknown> }[];
  regions: { name: string; size: string; flags: string[]; sparseMmap?: unknown; type?: unknown }[];
  irqs: { name: string; count: number; flags: string[] }[];
  bars: { bar: number; kind: string; regionSize: string; probedSize?: string }[];
  server: { capabilities: unknown };
  migration: unknown;
}

describe('vfio-user-ts inspect, our devices', () => {
  it('describes the NVMe controller and the GPIO card like lspci -vvv', async () => {
    const nvme = dir.file('nvme.sock');
    const gpio = dir.file('gpio.sock');
    const daemon = runDaemon([
      'serve',
      '--log-format',
      'json',
      ...['--device', 'nvme', '--socket', nvme, '--size', '1M'],
      ...['--device', 'gpio', '--socket', gpio, '--control', 'none'],
    ]);
    daemons.push(daemon);
    await daemon.waitFor(READY);

    const text = await runToExit(['inspect', nvme]);
    expect(text.stderr).toBe('');
    expect(text.code).toBe(0);
    const out = text.stdout;
    expect(out).toContain(`vfio-user device at ${nvme}`);
    expect(out).toMatch(/Server: vfio-user 0\.0, capabilities \{"capabilities":\{"max_msg_fds":16,/);
    expect(out).toContain('Device: RESET|PCI, 9 regions, 5 IRQ indexes');
    expect(out).toContain('Non-Volatile memory controller [0108]: Nutanix Inc. [4e58:0001] (prog-if 02 [NVM Express])');
    expect(out).toContain('\tRegion 0: Memory (64-bit, non-prefetchable) at <unassigned> [size=16K] [read,write]');
    expect(out).toContain('\tCapabilities: [40] Power Management version 3');
    expect(out).toMatch(
      /\tCapabilities: \[[0-9a-f]{2}\] MSI-X: Enable- Count=9 Masked-\n\t\tVector table: BAR=4 offset=00000000\n\t\tPBA: BAR=4 /,
    );
    expect(out).toMatch(
      /\tCapabilities: \[[0-9a-f]{2}\] Express \(v2\) Endpoint, MSI 00\n\t\tDevCap: MaxPayload 256 bytes, RBE\+ FLReset\+/,
    );
    expect(out).toContain('\t\t2 MSIX: 9 [EVENTFD]');
    expect(out).toContain('\t\t7 config: size 0x1000 offset 0x0 [read,write]');
    expect(out).toContain('\tMigration: STOP_COPY|PRE_COPY'); // the NVMe controller declares its state

    const json = await runToExit(['inspect', nvme, '--json']);
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as JsonReport;
    expect(report.pci).toMatchObject({ vendor: 0x4e58, device: 0x0001, classCode: 0x010802, configSize: 4096 });
    expect(report.capabilities.map((c) => c.name)).toEqual(['Power Management', 'MSI-X', 'Express']);
    expect(report.capabilities[1]!.fields).toMatchObject({ vectors: 9, tableBar: 4, enable: false });
    expect(report.irqs.map((i) => [i.name, i.count])).toEqual([
      ['INTX', 1],
      ['MSI', 0],
      ['MSIX', 9],
      ['ERR', 1],
      ['REQ', 0],
    ]);
    expect(report.server.capabilities).toMatchObject({ capabilities: { max_data_xfer_size: 1048576 } });

    // The GPIO card: an I/O BAR, sized as firmware does, and migration.
    const card = await runToExit(['inspect', gpio, '--probe-bars']);
    expect(card.code).toBe(0);
    expect(card.stdout).toContain('Signal processing controller [1180]: ACCES I/O Products, Inc. [494f:0dc8]');
    expect(card.stdout).toContain('\tRegion 2: I/O ports at <unassigned> [size=8] [decodes 8] [read,write]');
    expect(card.stdout).toContain('\tMigration: STOP_COPY|PRE_COPY');
    // Nothing was left attached: the next client is served.
    expect((await runToExit(['inspect', gpio])).code).toBe(0);
  });
});

describe('vfio-user-ts inspect, a server that is not ours', () => {
  it('decodes what the tiny server offers, writes nothing, hangs up', async () => {
    const socket = dir.file('tiny.sock');
    const tiny = await startTinyServer(socket);
    servers.push(tiny);
    const text = await runToExit(['inspect', socket]);
    expect(text.stderr).toBe('');
    expect(text.code).toBe(0);
    const out = text.stdout;
    expect(out).toContain(
      'Server: vfio-user 0.1, capabilities {"capabilities":{"max_msg_fds":1,"max_data_xfer_size":65536}}',
    );
    expect(out).toContain('Device: RESET|PCI, 10 regions, 5 IRQ indexes');
    expect(out).toContain('Memory controller [0580]: Device [1234:5678] (rev 07)');
    expect(out).toContain('\tSubsystem: Device [1234:0001]');
    expect(out).toContain('\tInterrupt: pin A routed to IRQ 0');
    expect(out).toContain(
      '\tRegion 0: Memory (32-bit, non-prefetchable) at <unassigned> [size=4K] [read,write,mmap,caps; mmap areas: 0x0+0x800]',
    );
    expect(out).toContain('\tCapabilities: [40] MSI: Enable- Count=1/4 Maskable+ 64bit+');
    expect(out).toContain('\tCapabilities: [58] Vendor Specific Information: Len=08 <?>\n\t\tData: 74 69 6e 79 21');
    expect(out).toContain('\tCapabilities: [60] Express (v2) Endpoint, MSI 00');
    expect(out).toContain('\t\tLnkCap: Port #0, Speed 2.5GT/s, Width x4');
    expect(out).toContain('\tCapabilities: [100 v1] Device Serial Number: 01-02-03-04-05-06-07-08');
    expect(out).toContain('\t\t9 MIGR: size 0x100 offset 0x0 [read,caps; type 1/1]');
    expect(out).toContain('\t\t1 MSI: 4 [EVENTFD|NORESIZE]');
    expect(out).toMatch(/\tMigration: not supported \((EOPNOTSUPP|ENOTSUP)\)/);
    await tiny.clientGone;
    expect(tiny.commands).not.toContain(VfioUserCommand.REGION_WRITE);
    expect(tiny.commands[0]).toBe(VfioUserCommand.VERSION);
  });

  it('--probe-bars sizes BAR0 and restores it; --json has the same facts', async () => {
    const socket = dir.file('tiny.sock');
    const tiny = await startTinyServer(socket);
    servers.push(tiny);
    const json = await runToExit(['inspect', socket, '--probe-bars', '--json']);
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as JsonReport;
    expect(report.bars).toEqual([
      { bar: 0, kind: 'mem32', prefetchable: false, register: '0x0', regionSize: '0x1000', probedSize: '0x1000' },
    ]);
    expect(report.regions[0]).toMatchObject({ name: 'BAR0', sparseMmap: [{ offset: '0x0', size: '0x800' }] });
    expect(report.regions[9]).toMatchObject({ name: 'MIGR', type: { type: 1, subtype: 1 } });
    expect(report.capabilities.map((c) => [c.name, c.extended])).toEqual([
      ['MSI', false],
      ['Vendor Specific Information', false],
      ['Express', false],
      ['Device Serial Number', true],
    ]);
    expect(tiny.commands).toContain(VfioUserCommand.REGION_WRITE);
    // What probing wrote to the BAR register was put back.
    expect(Array.from(tiny.config.subarray(0x10, 0x14))).toEqual([0, 0, 0, 0]);
  });

  it('says why when nothing listens', async () => {
    const missing = await runToExit(['inspect', dir.file('nobody.sock')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot connect to .*nobody\.sock: .*ENOENT/);
    const usage = await runToExit(['inspect']);
    expect(usage.code).toBe(2);
  });
});
