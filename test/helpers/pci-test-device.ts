/**
 * The protocol tests' device built on the real device model (server/pci
 * PciDevice): the same register map as TestDevice (see test-device.ts: BAR0
 * scratch registers, a DMA copy engine, an IRQ register), BAR2 as shared
 * memory, MSI-X (4 vectors, own BAR), INTx. DMA goes through dev.dma, which
 * picks the mmap or the DMA_READ/DMA_WRITE path.
 */
import { PciDevice } from '../../server/pci/index.js';
import { Field } from '../../server/state/fields.js';
import { defineDeviceState } from '../../server/state/device-state.js';
import { VfioUserError } from '../../protocol/errors.js';
import type { ClientPort, ResetReason } from '../../server/endpoint.js';
import { Errno } from '../../protocol/constants.js';
import type { DeviceUnderTest } from './device-under-test.js';
import { BAR0_SIZE, BAR2_SIZE, MSIX_VECTORS, Reg, TEST_DEVICE, TEST_VENDOR } from './test-device.js';

/** The kind of PciTestDevice's saved state. */
const TEST_STATE_KIND = 'pci-test-device';

/** PciTestDevice's state: its BAR0 registers. */
const testStateFields = Field.struct({ regs: Field.array(Field.u32(), BAR0_SIZE / 4) });

export interface PciTestDeviceOptions {
  /**
   * Declare a DeviceState (BAR0's registers, version 1) and a quiesce that
   * waits for the DMA job in flight: the device can then migrate. Default false
   * (the conformance tests' device cannot, like libvfio-user without callbacks).
   */
  migratable?: boolean;
  /** BAR2's size (default BAR2_SIZE): another size is another PCI layout, whose state does not fit. */
  bar2Size?: number;
}

export class PciTestDevice extends PciDevice implements DeviceUnderTest {
  readonly resets: ResetReason[] = [];
  attaches = 0;
  detaches = 0;
  private readonly regs: Uint32Array;
  private jobs: Promise<void> = Promise.resolve();

  constructor(name = 'pci-test-device', options: PciTestDeviceOptions = {}) {
    const regs = new Uint32Array(BAR0_SIZE / 4);
    let self: PciTestDevice | undefined;
    const migration = options.migratable
      ? {
          quiesce: () => self?.jobs,
          state: defineDeviceState({
            kind: TEST_STATE_KIND,
            version: 1,
            schema: testStateFields,
            save: () => ({ regs: [...regs] }),
            load: (s) => regs.set(s.regs),
          }),
        }
      : {};
    super({
      ...migration,
      name,
      id: { vendor: TEST_VENDOR, device: TEST_DEVICE, classCode: 0xff0000, revision: 1 },
      bars: [
        {
          index: 0,
          size: BAR0_SIZE,
          type: 'mem32',
          read: (off, size) => {
            const word = regs[off >> 2]!;
            const shift = (off & 3) * 8;
            return size === 4 ? word : (word >>> shift) & (size === 1 ? 0xff : 0xffff);
          },
          write: (off, size, value) => {
            if (size !== 4) {
              const shift = (off & 3) * 8;
              const mask = (size === 1 ? 0xff : 0xffff) << shift;
              regs[off >> 2] = ((regs[off >> 2]! & ~mask) | ((value << shift) & mask)) >>> 0;
              return;
            }
            regs[off >> 2] = value >>> 0;
            self?.registerWrite(off, value >>> 0);
          },
        },
        { index: 2, size: options.bar2Size ?? BAR2_SIZE, type: 'mem32', prefetchable: true, memory: true },
      ],
      interrupts: { intx: true, msi: { vectors: 1 }, msix: { vectors: MSIX_VECTORS, bar: 4 }, req: true },
      onReset: async (reason) => {
        await self?.jobs;
        self?.resets.push(reason);
        regs.fill(0);
      },
    });
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the BAR and reset handlers above are built before super() returns, when `this` cannot be named yet; they reach the device through `self`.
    self = this;
    this.regs = regs;
  }

  get expectedCapabilities(): { id: number; offset: number; extended: boolean }[] {
    const caps: { id: number; offset: number; extended: boolean }[] = [];
    const c = this.capabilities;
    if (c.pm !== undefined) caps.push({ id: 0x01, offset: c.pm, extended: false });
    if (c.msi !== undefined) caps.push({ id: 0x05, offset: c.msi, extended: false });
    if (c.express !== undefined) caps.push({ id: 0x10, offset: c.express, extended: false });
    if (c.msix !== undefined) caps.push({ id: 0x11, offset: c.msix, extended: false });
    for (const v of c.vendor) caps.push({ id: 0x09, offset: v, extended: false });
    return caps.sort((a, b) => a.offset - b.offset);
  }

  private registerWrite(off: number, value: number): void {
    if (off === Reg.DOORBELL && value === 1) {
      this.regs[Reg.STATUS >> 2] = 0;
      this.jobs = this.jobs.then(() => this.runJob());
    } else if (off === Reg.IRQ) {
      this.signal(value);
    }
  }

  private async runJob(): Promise<void> {
    const r = this.regs;
    const src = BigInt(r[Reg.DMA_SRC_LO >> 2]!) | (BigInt(r[Reg.DMA_SRC_HI >> 2]!) << 32n);
    const dst = BigInt(r[Reg.DMA_DST_LO >> 2]!) | (BigInt(r[Reg.DMA_DST_HI >> 2]!) << 32n);
    const len = r[Reg.DMA_LEN >> 2]!;
    try {
      if (r[Reg.MODE >> 2]! & 1) {
        const hold = this.dma.hold(src, len);
        const hold2 = this.dma.hold(dst, len);
        try {
          // Views are taken up front: an unmap takes the ranges out of the lookup at once
          // and waits (for the holds) only before the memory goes away.
          const from = this.dma.view(src, len, 'read');
          const to = this.dma.view(dst, len);
          await new Promise((resolve) => setTimeout(resolve, 50));
          to.set(from);
        } finally {
          hold.release();
          hold2.release();
        }
      } else {
        const data = await this.dma.read(src, len);
        await this.dma.write(dst, data);
      }
      r[Reg.STATUS >> 2] = 1;
      r[Reg.JOBS >> 2] = r[Reg.JOBS >> 2]! + 1;
    } catch (err) {
      const errno = err instanceof VfioUserError ? err.errno : Errno.EIO;
      this.log.debug({ err }, 'DMA job failed');
      r[Reg.STATUS >> 2] = (0x80000000 | errno) >>> 0;
    }
    this.signal(0);
  }

  signal(vector: number): void {
    try {
      this.irq.trigger(vector);
    } catch {
      // a vector the active type does not have: dropped, like hardware
    }
  }

  dmaRanges(): { addr: bigint; size: bigint; mapped: boolean }[] {
    return this.dma.regions.map((r) => ({ addr: r.addr, size: r.size, mapped: r.mapping !== undefined }));
  }

  hasEventfd(index: number, vector: number): boolean {
    return this.irq.hasEventfd(index, vector);
  }

  override attach(port: ClientPort): void {
    this.attaches++;
    super.attach(port);
  }

  override async detach(): Promise<void> {
    try {
      await super.detach();
    } finally {
      this.detaches++;
    }
  }
}
