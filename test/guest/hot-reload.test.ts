/**
 * The edit-reload loop under a real Linux guest: `vfio-user-ts serve --watch`
 * serves examples/reloadable-device.ts (a copy in a temp folder), QEMU's
 * vfio-user-pci attaches it, and the guest reads its ANSWER register in a
 * loop with busybox devmem while the test rewrites the module file with
 * another ANSWER. The guest sees the new value on the same device (no
 * re-enumeration), the SCRATCH value it wrote before the reload is still
 * there (the device was not reset), and QEMU logs no error.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect } from 'vitest';
import { startGuest, type Guest } from '../../guest-kit/boot.js';
import { ROOT, runDaemon, type DaemonProcess } from '../cli/daemon-process.js';
import { findPciDevice } from '../helpers/guest-script.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { guestTest } from './guest-test.js';

const EXAMPLE = readFileSync(join(ROOT, 'examples', 'reloadable-device.ts'), 'utf8');
const OLD = '0x2A2A0001';
const NEW = '0x2A2A0002';

/** Enable the device, write SCRATCH, then read ANSWER until it changes (at most 4000 reads). */
const SCRIPT = `
${findPciDevice(0x1b36, 0x0005)}
echo 1 > $dev/enable
bar=$(( $(head -n 1 $dev/resource | cut -d' ' -f1) ))
devmem $(( bar + 4 )) 32 0xfeedf00d
echo "RESULT before=$(devmem $bar 32)"
echo "LOOPING"
i=0
while [ $i -lt 4000 ]; do
  v=$(devmem $bar 32)
  [ "$v" = "${NEW}" ] && break
  [ "$v" = "${OLD}" ] || echo "RESULT odd=$v"
  i=$(( i + 1 ))
done
echo "RESULT reads=$i"
echo "RESULT after=$(devmem $bar 32)"
echo "RESULT scratch=$(devmem $(( bar + 4 )) 32)"
echo "RESULT writes=$(devmem $(( bar + 8 )) 32)"
echo "RESULT devices=$(ls /sys/bus/pci/devices | wc -l)"
`;

describe('serve --watch under a Linux guest', () => {
  let dir: TempDir | undefined;
  let daemon: DaemonProcess | undefined;
  let guest: Guest | undefined;
  afterEach(async () => {
    guest?.kill();
    await guest?.exited;
    daemon?.kill('SIGTERM');
    await daemon?.exited;
    dir?.remove();
  });

  guestTest('the guest reads the new register value after the module file changes, without a reset', async () => {
    dir = tempDir('vfu-reload-guest-');
    const modulePath = dir.file('reloadable.ts');
    const socketPath = dir.file('reloadable.sock');
    writeFileSync(modulePath, EXAMPLE);
    daemon = runDaemon(['serve', '--watch', '--log-format', 'json', '--device', modulePath, '--socket', socketPath]);
    await daemon.waitFor(/watching reloadable\.ts/);
    guest = await startGuest({ devices: [{ socketPath }], script: SCRIPT, timeoutMs: 150_000 });
    await guest.waitForLine(/LOOPING/);
    const resets = (): number => daemon!.stdout().match(/"msg":"reset"/g)?.length ?? 0;
    const resetsBefore = resets(); // QEMU resets the device as it realizes it
    const t0 = performance.now();
    writeFileSync(modulePath, EXAMPLE.replace('ANSWER = 0x2a2a0001', 'ANSWER = 0x2a2a0002'));
    const reloaded = await daemon.waitFor(/\{[^\n]*"device module reloaded"[^\n]*\}/, 60_000);
    const saved = performance.now() - t0;
    const result = await guest.exited;
    const record = JSON.parse(reloaded[0]) as { ms: number; heldMs: number; stateBytes: number; connected: boolean };
    // The figures, for the record (not asserted: speed is for benchmarks).
    console.log(
      `hot reload under a guest: write-to-reloaded ${saved.toFixed(0)} ms (incl. 150 ms debounce), ` +
        `reload ${record.ms} ms, requests held ${record.heldMs} ms, state ${record.stateBytes} bytes, ` +
        `guest reads before the new value ${result.results.reads}`,
    );
    expect(record.connected).toBe(true);
    expect(result.results).toMatchObject({
      found: 'yes',
      before: OLD,
      after: NEW,
      scratch: '0xFEEDF00D', // written before the reload: not reset
      writes: '0x00000001',
      exit: '0',
    });
    expect(result.results.odd).toBeUndefined();
    expect(Number(result.results.reads)).toBeLessThan(4000); // it saw the new value, not the loop's end
    const qemuErrors = result.serial.split('\n').filter((l) => l.startsWith('[qemu]') && /error|fail/i.test(l));
    expect(qemuErrors).toEqual([]);
    // One client all along, no reset from the reload on.
    expect(daemon.stdout().match(/"client connected"/g)).toHaveLength(1);
    expect(daemon.stdout()).not.toMatch(/client disconnected/);
    expect(resets()).toBe(resetsBefore);
  });
});
