/**
 * Device-initiated DMA against a real QEMU guest, both ways QEMU offers guest
 * RAM: plain `-m` RAM (no fds: DmaSpace goes through DMA_READ/DMA_WRITE
 * messages, spec layout) and a shared memfd (mmapped). The guest enables bus
 * mastering, rings a doorbell in BAR0, and checks with devmem what the device
 * wrote at guest-physical 0x80000; then it writes a pattern at 0x80100 and the
 * device reads it. (Low 1 MiB: /dev/mem may map it under STRICT_DEVMEM, and
 * Linux keeps it for itself, so the test scribbles over nothing in use.)
 */
import { beforeAll, describe, expect } from 'vitest';
import { PciDevice } from '../../server/pci/index.js';
import { serve } from '../../server/server.js';
import { createLogger } from '../../server/log.js';
import { runGuest } from '../../guest-kit/boot.js';
import { guestTest } from '../guest/guest-test.js';
import { isCI } from '../guest/global-setup.js';
import { ensureKit } from '../../guest-kit/kit.js';
import { tempSocketPath } from '../helpers/temp.js';

const WRITE_AT = 0x80000n;
const READ_AT = 0x80100n;
const PATTERN = new Uint8Array(64).map((_, i) => (i * 7 + 1) & 0xff);

const SCRIPT = `
fail() { echo "RESULT error=$*"; exit 1; }
dev=
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor)" = 0x1b36 ] && [ "$(cat $d/device)" = 0x0005 ]; then dev=$d; fi
done
[ -n "$dev" ] || fail no-device
bar0=$(sed -n 1p $dev/resource | cut -d' ' -f1)
echo "RESULT bar0=$bar0"
# COMMAND = MEMORY | BUS_MASTER
printf '\\006\\000' | dd of=$dev/config bs=1 seek=4 count=2 conv=notrunc 2>/dev/null
echo "RESULT command=$(od -An -tx2 -j4 -N2 $dev/config | tr -d ' ')"
waitstatus() {
  i=0
  while [ "$(devmem $((bar0 + 4)) 32)" != "$1" ]; do
    i=$((i + 1)); [ $i -lt 3000 ] || fail "status $(devmem $((bar0 + 4)) 32), waiting for $1"
  done
}
devmem $bar0 32 1
waitstatus 0x00000001
w=
o=0; while [ $o -lt 64 ]; do w="$w $(devmem $((0x80000 + o)) 32)"; o=$((o + 4)); done
echo "RESULT written=$w"
o=0; while [ $o -lt 64 ]; do devmem $((0x80100 + o)) 32 $(( (o / 4 + 1) * 0x01010101 )); o=$((o + 4)); done
devmem $bar0 32 2
waitstatus 0x00000002
echo "RESULT done=1"
`;

/** What the guest's devmem prints for PATTERN read as 16 little-endian u32 words. */
function expectedWords(): string {
  const dv = new DataView(PATTERN.buffer);
  const words: string[] = [];
  for (let o = 0; o < 64; o += 4) words.push(`0x${dv.getUint32(o, true).toString(16).toUpperCase().padStart(8, '0')}`);
  return words.join(' ');
}

// This file runs in the unit project (no kit globalSetup): under CI=true make
// sure the kit exists (cached after the first time) instead of failing on a fresh machine.
beforeAll(async () => {
  if (isCI()) await ensureKit();
});

describe.each([
  ['plain RAM: DMA_READ/DMA_WRITE messages', false],
  ['shared memfd RAM: mmap', true],
] as const)('device DMA in a QEMU guest (%s)', (_name, shared) => {
  guestTest(
    'the device writes and reads guest memory',
    async () => {
      const log = createLogger({
        level: (process.env.TEST_LOG_LEVEL as 'debug' | undefined) ?? 'silent',
        pretty: false,
      });
      let status = 0;
      let captured: Uint8Array | undefined;
      let failure: Error | undefined;
      /** At the first doorbell: is guest RAM at WRITE_AT mapped, and through an fd? */
      let lowRam: 'unmapped' | 'fd' | 'messages' | undefined;
      const dev: PciDevice = new PciDevice({
        name: 'dma-test',
        log,
        id: { vendor: 0x1b36, device: 0x0005, classCode: 0xff0000, revision: 1 },
        bars: [
          {
            index: 0,
            size: 0x1000,
            type: 'mem32',
            read: (offset: number) => (offset === 4 ? status : 0),
            write: (offset: number, _size: number, value: number) => {
              if (offset !== 0) return;
              if (lowRam === undefined) {
                const region = dev.dma.find(WRITE_AT);
                lowRam = !region ? 'unmapped' : region.mapping ? 'fd' : 'messages';
              }
              // Never hold the (posted) write on the DMA: run it on its own.
              const job =
                value === 1
                  ? dev.dma.write(WRITE_AT, PATTERN).then(() => {
                      status = 1;
                    })
                  : dev.dma.read(READ_AT, 64).then((d) => {
                      captured = d;
                      status = 2;
                    });
              job.catch((err: unknown) => {
                failure = err instanceof Error ? err : new Error(String(err));
                status = 0xdead;
              });
            },
          },
        ],
      });
      const sock = tempSocketPath('dma');
      const server = await serve(dev, { socketPath: sock.path, log });
      try {
        const result = await runGuest({
          devices: [{ socketPath: sock.path }],
          script: SCRIPT,
          sharedMemory: shared,
          timeoutMs: 170_000,
        });
        const r = result.results;
        const context = `${String(failure ?? '')}\n${result.serial}`;
        expect(r.error, context).toBeUndefined();
        expect(r.command, context).toBe('0006');
        expect(r.written?.trim(), context).toBe(expectedWords());
        expect(r.done, context).toBe('1');
        expect([...captured!]).toEqual(Array.from({ length: 64 }, (_, i) => (i >> 2) + 1));
        expect(lowRam).toBe(shared ? 'fd' : 'messages');
      } finally {
        await server.close();
        sock.remove();
      }
    },
    180_000,
  );
});
