/**
 * The smallest useful device: a BAR of registers and an interrupt.
 *
 *   npx tsx examples/minimal-device.ts /tmp/minimal.sock
 *   qemu-system-x86_64 ... -device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/tmp/minimal.sock"}}'
 *
 * BAR0 (4 KiB, little-endian u32): 0x00 MAGIC (read-only), 0x04 SCRATCH,
 * 0x08 DOORBELL (write n: signal vector n), 0x0c RINGS (doorbells so far).
 */
import { pathToFileURL } from 'node:url';
import { PciDevice, serve, createLogger, type Logger } from 'vfio-user-ts';

export const MAGIC = 0x5ca1ab1e;
export const MinimalReg = { MAGIC: 0x00, SCRATCH: 0x04, DOORBELL: 0x08, RINGS: 0x0c } as const;

export function createMinimalDevice(log?: Logger): PciDevice {
  let scratch = 0;
  let rings = 0;
  const dev: PciDevice = new PciDevice({
    name: 'minimal',
    id: { vendor: 0x1b36, device: 0x0005, classCode: 0xff0000, revision: 1 },
    bars: [
      {
        index: 0,
        size: 0x1000,
        read: (offset) => {
          switch (offset & ~3) {
            case MinimalReg.MAGIC:
              return MAGIC;
            case MinimalReg.SCRATCH:
              return scratch;
            case MinimalReg.RINGS:
              return rings;
            default:
              return 0;
          }
        },
        write: (offset, _size, value) => {
          if (offset === MinimalReg.SCRATCH) scratch = value;
          if (offset === MinimalReg.DOORBELL) {
            rings++;
            dev.irq.trigger(value % 2);
          }
        },
      },
    ],
    interrupts: { intx: true, msix: { vectors: 2, bar: 1 } },
    onReset: () => {
      scratch = 0;
      rings = 0;
    },
    ...(log ? { log } : {}),
  });
  return dev;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const log = createLogger();
  const server = await serve(createMinimalDevice(log), { socketPath: process.argv[2] ?? '/tmp/minimal.sock', log });
  log.info({ socket: server.socketPath }, 'minimal device ready');
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void server.close());
}
