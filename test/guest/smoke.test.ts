import { describe, expect } from 'vitest';
import { runGuest, startGuest } from '../../guest-kit/boot.js';
import { guestTest } from './guest-test.js';

describe('guest kit smoke test (no vfio-user device)', () => {
  guestTest('boots Linux, loads modules, runs the script and powers off', async () => {
    const result = await runGuest({
      devices: [],
      modules: ['nvme', 'gpio-pci-idio-16'],
      files: { 'etc/greeting': 'hello from the host\n' },
      script: [
        'echo "RESULT greeting=$(cat /etc/greeting)"',
        'echo "RESULT kernel=$(uname -r)"',
        'echo "RESULT nvme=$(grep -c "^nvme " /proc/modules)"',
        'echo "RESULT idio=$(grep -c "^gpio_pci_idio_16 " /proc/modules)"',
        'echo "RESULT cpus=$(nproc)"',
        'exit 3',
      ].join('\n'),
    });
    expect(result.code).toBe(0);
    expect(result.results).toMatchObject({
      greeting: 'hello from the host',
      nvme: '1',
      idio: '1',
      cpus: '1',
      exit: '3',
    });
    expect(result.results.kernel).toMatch(/^6\.12\./);
    expect(result.serial).not.toMatch(/GUEST-MODULE-FAILED/);
  });

  guestTest('talks to an interactive shell over the serial console, with plain RAM and 2 vCPUs', async () => {
    const guest = await startGuest({
      devices: [],
      sharedMemory: false,
      smp: 2,
      script: 'while read -r line; do [ "$line" = quit ] && break; echo "ECHO $line $(nproc)"; done',
    });
    try {
      await guest.waitForLine(/^GUEST-READY/);
      guest.write('ping\n');
      const m = await guest.waitForLine(/^ECHO (\S+) (\d+)/);
      expect(m[1]).toBe('ping');
      expect(m[2]).toBe('2');
      guest.write('quit\n');
      const result = await guest.exited;
      expect(result.results.exit).toBe('0');
    } finally {
      guest.kill();
    }
  });

  guestTest('a hung guest is killed at the hard timeout and the serial log is attached', async () => {
    const err = await runGuest({ devices: [], script: 'echo HANGING; sleep 1000', timeoutMs: 12_000 }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect(String(err)).toMatch(/guest timed out after 12000 ms/);
    // The serial log (whatever the guest got to print) and the reason are attached.
    expect(String(err)).toMatch(
      /----- serial console and QEMU stderr -----[^]*\[vfio-user-ts\] guest timed out[^]*----- end -----/,
    );
  });

  guestTest("a vfio-user socket nobody listens on fails at once, with QEMU's error attached", async () => {
    const err = await runGuest({ devices: [{ socketPath: '/nonexistent/vfio-user-ts.sock' }], script: 'true' }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect(String(err)).toMatch(/QEMU exited \(code 1\)/);
    expect(String(err)).toMatch(/\[qemu\] .*vfio-user-ts\.sock/);
  });

  guestTest('rejects nonsense options before starting QEMU', async () => {
    await expect(runGuest({ devices: [], script: 'true', memoryMiB: 1.5 })).rejects.toThrow(/memoryMiB/);
    await expect(runGuest({ devices: [], script: 'true', smp: 0 })).rejects.toThrow(/smp/);
    await expect(runGuest({ devices: [], script: 'true', timeoutMs: -1 })).rejects.toThrow(/timeoutMs/);
  });
});
