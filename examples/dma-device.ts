/**
 * A device that does DMA: the guest hands it a buffer address and a length,
 * rings the doorbell, and the device fills the buffer, then interrupts.
 *
 *   npx tsx examples/dma-device.ts /tmp/dma.sock
 *
 * BAR0 registers (little-endian u32):
 *   0x00 ADDR_LO, 0x04 ADDR_HI   guest-physical buffer address
 *   0x08 LEN                     bytes to fill (at most 1 MiB)
 *   0x0c SEED                    first byte; each next byte is the previous + 1
 *   0x10 DOORBELL                write 1: fill the buffer; write 2: sum its bytes into SUM
 *   0x14 STATUS                  0 idle/busy, 1 done, 0x80000000 | errno on failure
 *   0x18 SUM                     byte sum of the buffer (after doorbell 2)
 */
import { pathToFileURL } from 'node:url';
import { PciDevice, ScatterGather, serve, createLogger, VfioUserError, Errno, type Logger } from 'vfio-user-ts';

export const DmaReg = {
  ADDR_LO: 0x00,
  ADDR_HI: 0x04,
  LEN: 0x08,
  SEED: 0x0c,
  DOORBELL: 0x10,
  STATUS: 0x14,
  SUM: 0x18,
} as const;
const MAX_LEN = 1 << 20;

export function createDmaDevice(log?: Logger): PciDevice {
  const regs = new Uint32Array(7);
  let job = Promise.resolve();

  async function run(op: number): Promise<void> {
    const addr = (BigInt(regs[DmaReg.ADDR_HI >> 2]!) << 32n) | BigInt(regs[DmaReg.ADDR_LO >> 2]!);
    const len = Math.min(regs[DmaReg.LEN >> 2]!, MAX_LEN);
    try {
      if (!dev.busMasterEnabled) throw new VfioUserError(Errno.EPERM, 'bus mastering is off');
      // One segment here; a real device would build the list from descriptors (PRPs, SGLs).
      const buffer = new ScatterGather([{ addr, length: len }]);
      if (op === 1) {
        await buffer.write(
          dev.dma,
          new Uint8Array(len).map((_, i) => (regs[DmaReg.SEED >> 2]! + i) & 0xff),
        );
      } else {
        regs[DmaReg.SUM >> 2] = (await buffer.read(dev.dma)).reduce((sum, b) => (sum + b) >>> 0, 0);
      }
      regs[DmaReg.STATUS >> 2] = 1;
    } catch (err) {
      const errno = err instanceof VfioUserError ? err.errno : Errno.EIO;
      dev.log.warn({ err, addr, len }, 'DMA failed');
      regs[DmaReg.STATUS >> 2] = (0x80000000 | errno) >>> 0;
    }
    dev.irq.trigger(0);
  }

  const dev: PciDevice = new PciDevice({
    name: 'dma-fill',
    id: { vendor: 0x1234, device: 0xd3a0, classCode: 0xff0000 },
    bars: [
      {
        index: 0,
        size: 0x1000,
        read: (offset) => regs[offset >> 2] ?? 0,
        write: (offset, size, value) => {
          if (size !== 4 || offset >= DmaReg.STATUS) return; // STATUS and SUM are read-only
          if (offset === DmaReg.DOORBELL) {
            if (value !== 1 && value !== 2) return;
            regs[DmaReg.STATUS >> 2] = 0;
            // Run after this write's reply: never hold a reply on our own DMA (QEMU would deadlock).
            job = job.then(() => run(value));
            return;
          }
          regs[offset >> 2] = value;
        },
      },
    ],
    interrupts: { intx: true, msi: { vectors: 1 }, msix: { vectors: 1, bar: 2 } },
    express: true,
    capabilities: [{ kind: 'pm' }],
    quiesce: () => job,
    onReset: () => {
      regs.fill(0);
    },
    ...(log ? { log } : {}),
  });
  return dev;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const log = createLogger();
  const server = await serve(createDmaDevice(log), { socketPath: process.argv[2] ?? '/tmp/dma.sock', log });
  log.info({ socket: server.socketPath }, 'DMA device ready');
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void server.close());
}
