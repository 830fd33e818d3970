/**
 * The daemon with a real QEMU: start the built-in default (NVMe + GPIO), take
 * the `-device` options it prints, boot a Linux guest with exactly those, and
 * check both drivers bind. Then the sockets take the next client, and SIGTERM
 * stops everything cleanly.
 *
 * Provisions the guest kit itself if needed (this file runs in the unit
 * project); with CI=true a missing kit fails, locally it skips loudly.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../client/index.js';
import { PciRegion } from '../../protocol/constants.js';
import { runGuest } from '../../guest-kit/boot.js';
import { isCI } from '../guest/global-setup.js';
import { loadKit, provisioningBlocker } from '../../guest-kit/kit.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { runDaemon, type DaemonProcess } from './daemon-process.js';

const blocker = loadKit() ? undefined : provisioningBlocker();
const skipOutsideCI = blocker !== undefined && !isCI();
if (skipOutsideCI) process.stderr.write(`\n!! SKIPPING the daemon's QEMU test: ${blocker}\n\n`);

const SCRIPT = `
i=0
while [ ! -e /sys/block/nvme0n1 ] && [ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done
for d in /sys/bus/pci/devices/*; do
  case "$(cat $d/vendor):$(cat $d/device)" in
    0x494f:0x0dc8) echo "RESULT gpio_driver=$(basename "$(readlink $d/driver)")" ;;
    0x4e58:*) echo "RESULT nvme_driver=$(basename "$(readlink $d/driver)")" ;;
  esac
done
echo "RESULT nvme_sectors=$(cat /sys/block/nvme0n1/size 2>/dev/null)"
`;

describe.skipIf(skipOutsideCI)(`vfio-user-ts serve with QEMU${skipOutsideCI ? ` [SKIPPED: ${blocker}]` : ''}`, () => {
  let dir: TempDir;
  let daemon: DaemonProcess;
  beforeAll(async () => {
    dir = tempDir('vfu-q-');
    daemon = runDaemon(['serve', '--log-format', 'json'], { cwd: dir.path });
    await daemon.waitFor(/vfio-user-ts vm[^\n]*\n/);
  });
  afterAll(async () => {
    daemon.kill('SIGKILL');
    await daemon.exited;
    dir.remove();
  });

  it('QEMU connects with the printed -device options and Linux binds nvme and pci-idio-16', async () => {
    const devices = [...daemon.stderr().matchAll(/^ {2}-device '(\{.*\})'$/gm)].map((m) => m[1]!);
    expect(devices).toHaveLength(2);
    const result = await runGuest({
      devices: [],
      qemuArgs: devices.flatMap((json) => ['-device', json]),
      modules: ['nvme', 'gpio-pci-idio-16'],
      script: SCRIPT,
      timeoutMs: 150_000,
    });
    expect(result.results, result.serial).toMatchObject({
      nvme_driver: 'nvme',
      gpio_driver: 'pci-idio-16',
      nvme_sectors: String(2 ** 30 / 512),
    });

    // QEMU is gone: each device was reset and its socket takes the next client.
    for (const name of ['nvme0', 'gpio0']) {
      const client = await VfioUserClient.connect(join(dir.path, 'run', `${name}.sock`), { timeoutMs: 5000 });
      expect((await client.regionRead(PciRegion.CONFIG, 0, 2)).length).toBe(2);
      client.close();
    }

    daemon.kill('SIGTERM');
    expect(await daemon.exited).toEqual({ code: 0, signal: null });
    expect(existsSync(join(dir.path, 'run', 'nvme0.sock'))).toBe(false);
    expect(existsSync(join(dir.path, 'run', 'gpio0.sock'))).toBe(false);
  }, 240_000);
});
