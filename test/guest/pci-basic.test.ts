/**
 * The end-to-end check of the PCI model and server: a tiny PciDevice served on a
 * UNIX socket, QEMU's vfio-user-pci attached to it, and an unmodified Linux guest
 * that finds it in sysfs, reads its config space and reads/writes BAR0 with devmem.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect } from 'vitest';
import { PciDevice, serve, createLogger, silentLogger, type DeviceServer } from '../../server/index.js';
import { runGuest } from '../../guest-kit/boot.js';
import { guestTest } from './guest-test.js';

const VENDOR = 0x1234;
const DEVICE = 0xbeef;
const MAGIC = 0xc0ffee00;

/** Finds our device in sysfs, prints its ids, config bytes, BAR0 address and BAR0 registers. */
const SCRIPT = `
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = "0x1234" ] && [ "$(cat $d/device)" = "0xbeef" ] && dev=$d
done
[ -n "$dev" ] || { echo "RESULT found=no"; ls -l /sys/bus/pci/devices; exit 1; }
echo "RESULT found=yes"
echo "RESULT class=$(cat $dev/class)"
echo "RESULT revision=$(cat $dev/revision)"
echo "RESULT config=$(dd if=$dev/config bs=1 count=4 2>/dev/null | hexdump -v -e '4/1 "%02x"')"
echo 1 > $dev/enable
bar=$(head -n 1 $dev/resource | cut -d' ' -f1)
echo "RESULT bar0size=$(( $(head -n 1 $dev/resource | cut -d' ' -f2) - bar + 1 ))"
echo "RESULT reg0=$(devmem $(( bar + 0 )) 32)"
echo "RESULT reg8=$(devmem $(( bar + 8 )) 32)"
devmem $(( bar + 16 )) 32 0x12345678
echo "RESULT reg16=$(devmem $(( bar + 16 )) 32)"
echo "RESULT byte16=$(devmem $(( bar + 16 )) 8)"
`;

describe('a TypeScript PCI device in a real Linux guest', () => {
  let server: DeviceServer | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    server = undefined;
    dir = undefined;
  });

  for (const sharedMemory of [true, false])
    guestTest(
      `Linux enumerates the device and reads/writes its BAR0 registers (${sharedMemory ? 'memfd guest RAM' : 'plain guest RAM, no fds'})`,
      async () => {
        dir = mkdtempSync(join(tmpdir(), 'vfio-user-ts-pci-basic-'));
        const socketPath = join(dir, 'demo.sock');
        const log = process.env.LOG_LEVEL ? createLogger({ pretty: false }) : silentLogger;
        const regs = new Uint32Array(0x1000 / 4);
        const writes: string[] = [];
        const device = new PciDevice({
          name: 'pci-basic',
          id: { vendor: VENDOR, device: DEVICE, classCode: 0xff0000, revision: 7 },
          bars: [
            {
              index: 0,
              size: 0x1000,
              type: 'mem32',
              read: (offset, size) => {
                const value = offset >= 16 ? regs[offset >> 2]! : (MAGIC | (offset & 0xff)) >>> 0;
                return size === 4 ? value : (value >>> ((offset & 3) * 8)) & (size === 1 ? 0xff : 0xffff);
              },
              write: (offset, size, value) => {
                writes.push(`${offset}/${size}=${value.toString(16)}`);
                if (size === 4) regs[offset >> 2] = value;
              },
            },
          ],
          log,
        });
        server = await serve(device, { socketPath, log });
        const result = await runGuest({ devices: [{ socketPath }], script: SCRIPT, sharedMemory });
        expect(result.results).toMatchObject({
          found: 'yes',
          class: '0xff0000',
          revision: '0x07',
          config: '3412efbe',
          bar0size: String(0x1000),
          reg0: '0xC0FFEE00',
          reg8: '0xC0FFEE08',
          reg16: '0x12345678',
          byte16: '0x78',
          exit: '0',
        });
        expect(writes).toContain('16/4=12345678');
      },
    );
});
