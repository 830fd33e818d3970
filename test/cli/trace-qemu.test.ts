/**
 * The trace of a real QEMU session: the daemon serves an NVMe controller with
 * --trace-file, a Linux guest binds the nvme driver, and the capture holds
 * what QEMU 11.1 sent, decoded: VERSION with its capabilities, the region and
 * IRQ queries, DMA_MAP with the guest RAM's memfd, MSI-X eventfds through
 * SET_IRQS, doorbell writes to BAR0; nothing malformed. `vfio-user-ts trace`
 * filters it by command and region.
 *
 * Provisions the guest kit itself if needed; with CI=true a missing kit fails,
 * locally it skips loudly.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runGuest } from '../../guest-kit/boot.js';
import { isCI } from '../guest/global-setup.js';
import { loadKit, provisioningBlocker } from '../../guest-kit/kit.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { runDaemon, runToExit, type DaemonProcess } from './daemon-process.js';

const blocker = loadKit() ? undefined : provisioningBlocker();
const skipOutsideCI = blocker !== undefined && !isCI();
if (skipOutsideCI) process.stderr.write(`\n!! SKIPPING the QEMU trace test: ${blocker}\n\n`);

const SCRIPT = `
i=0
while [ ! -e /sys/block/nvme0n1 ] && [ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done
echo "RESULT nvme_sectors=$(cat /sys/block/nvme0n1/size 2>/dev/null)"
`;

interface Record {
  kind: string;
  cmd?: string;
  fds?: number;
  request?: { [key: string]: unknown };
  reply?: { [key: string]: unknown };
}

describe.skipIf(skipOutsideCI)(`a QEMU session captured${skipOutsideCI ? ` [SKIPPED: ${blocker}]` : ''}`, () => {
  let dir: TempDir;
  let daemon: DaemonProcess;
  beforeAll(async () => {
    dir = tempDir('vfu-tq-');
    daemon = runDaemon([
      'serve',
      '--log-format',
      'json',
      '--trace-file',
      dir.file('qemu.jsonl'),
      ...['--device', 'nvme', '--socket', dir.file('nvme.sock'), '--size', '16M'],
    ]);
    await daemon.waitFor(/vfio-user-ts vm[^\n]*\n/);
  });
  afterAll(async () => {
    daemon.kill('SIGKILL');
    await daemon.exited;
    dir.remove();
  });

  it('holds every message QEMU sent, decoded', async () => {
    const [device] = [...daemon.stderr().matchAll(/^ {2}-device '(\{.*\})'$/gm)].map((m) => m[1]!);
    const result = await runGuest({
      devices: [],
      qemuArgs: ['-device', device!],
      modules: ['nvme'],
      script: SCRIPT,
      timeoutMs: 150_000,
    });
    expect(result.results, result.serial).toMatchObject({ nvme_sectors: String((16 << 20) / 512) });
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);

    const records = readFileSync(dir.file('qemu.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .slice(1)
      .map((l) => JSON.parse(l) as Record);
    const messages = records.filter((r) => r.kind === 'message');
    const version = messages.find((r) => r.cmd === 'VERSION');
    expect(JSON.parse(version?.request?.caps as string)).toMatchObject({ capabilities: { max_msg_fds: 16 } });
    expect(messages.filter((r) => r.cmd === 'DEVICE_GET_REGION_INFO').map((r) => r.request?.region)).toContain(
      'config',
    );
    // Guest RAM is a shared memfd: DMA_MAP brings its fd.
    const maps = messages.filter((r) => r.cmd === 'DMA_MAP');
    expect(maps.length).toBeGreaterThan(0);
    expect(maps.some((r) => r.fds === 1 && r.request?.prot === 'rw')).toBe(true);
    // The nvme driver's MSI-X vectors come as eventfds.
    const irqs = messages.filter((r) => r.cmd === 'DEVICE_SET_IRQS' && r.request?.index === 'MSIX');
    expect(irqs.some((r) => (r.fds ?? 0) > 0 && r.request?.flags === 'DATA_EVENTFD|ACTION_TRIGGER')).toBe(true);
    expect(messages.some((r) => r.cmd === 'REGION_WRITE' && r.request?.region === 'BAR0')).toBe(true);
    expect(messages.filter((r) => r.request?.malformed !== undefined || r.reply?.malformed !== undefined)).toEqual([]);

    const printed = await runToExit(['trace', dir.file('qemu.jsonl'), '--command', 'dma_map,set_irqs']);
    expect(printed.code).toBe(0);
    const lines = printed.stdout.split('\n').filter((l) => l.includes(' nvme0#'));
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toMatch(/ (DMA_MAP|DEVICE_SET_IRQS) #\d+ /);
    expect(lines.join('\n')).toMatch(
      /DMA_MAP #\d+ addr=0x[0-9a-f]+ size=0x[0-9a-f]+ prot=rw flags=READ\|WRITE offset=0x[0-9a-f]+ argsz=32 fds=1 -> ok/,
    );
  }, 240_000);
});
