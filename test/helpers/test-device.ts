/**
 * A small but real PCI device implementing Endpoint, for protocol tests until
 * (and alongside) server/pci's PciDevice. It is a device, not a mock: config
 * space with BAR sizing and a capability list, a register BAR with a DMA
 * engine, an mmappable memfd BAR, five IRQ indexes with eventfds, and a DMA
 * map table (fd-backed maps are mmapped; fd-less ones go through the client
 * with DMA_READ/DMA_WRITE).
 *
 * BAR0 registers (little-endian u32):
 *   0x00, 0x04  scratch (read/write)
 *   0x10/0x14   DMA source address (lo/hi)
 *   0x18/0x1c   DMA destination address (lo/hi)
 *   0x20        DMA length
 *   0x24        doorbell: writing 1 copies length bytes source -> destination
 *               through DMA, then sets STATUS and signals MSI-X vector 0 (or INTx)
 *   0x28        STATUS: 0 idle/busy, 1 done, 0x80000000|errno on failure
 *   0x2c        IRQ: writing n signals vector n of the active index
 *   0x30        count of completed DMA jobs
 *   0x34        MODE (PciTestDevice only): bit 0 makes the next jobs hold their
 *               fd-backed ranges across a 50 ms wait (DMA_UNMAP must wait for them)
 */
import { native, type NativeMapping } from '../../native/index.js';
import { VfioUserError } from '../../protocol/errors.js';
import {
  type ClientPort,
  type DmaMapRequest,
  type IrqInfo,
  type RegionDescription,
  type ResetReason,
  type SetIrqsRequest,
} from '../../server/endpoint.js';
import type { DeviceUnderTest } from './device-under-test.js';
import { Errno, IrqInfoFlag, IrqSetFlag, PciIrq, PciRegion, RegionFlag } from '../../protocol/constants.js';

export const TEST_VENDOR = 0x1b36;
export const TEST_DEVICE = 0x0099;
export const BAR0_SIZE = 0x1000;
export const BAR2_SIZE = 0x4000;
export const CONFIG_SIZE = 256;
export const MSIX_VECTORS = 4;

export const Reg = {
  SCRATCH0: 0x00,
  SCRATCH1: 0x04,
  DMA_SRC_LO: 0x10,
  DMA_SRC_HI: 0x14,
  DMA_DST_LO: 0x18,
  DMA_DST_HI: 0x1c,
  DMA_LEN: 0x20,
  DOORBELL: 0x24,
  STATUS: 0x28,
  IRQ: 0x2c,
  JOBS: 0x30,
  /** PciTestDevice only: bit 0 = "slow held job": hold() the ranges, copy through view(), wait 50 ms, then release. */
  MODE: 0x34,
} as const;

interface DmaMapRecord {
  addr: bigint;
  size: bigint;
  flags: number;
  offset: bigint;
  mapping?: NativeMapping;
}

function irqCounts(): number[] {
  const counts = [];
  counts[PciIrq.INTX] = 1;
  counts[PciIrq.MSI] = 1;
  counts[PciIrq.MSIX] = MSIX_VECTORS;
  counts[PciIrq.ERR] = 1;
  counts[PciIrq.REQ] = 1;
  return counts;
}

export class TestDevice implements DeviceUnderTest {
  readonly numRegions = PciRegion.COUNT;
  readonly numIrqs = PciIrq.COUNT;
  readonly resetSupported = true;

  /** Every reset, in order, with its reason. */
  readonly resets: ResetReason[] = [];
  /** attach()/detach() calls. */
  attaches = 0;
  detaches = 0;
  port: ClientPort | undefined;

  readonly config = new Uint8Array(CONFIG_SIZE);
  readonly bar0 = new Uint8Array(BAR0_SIZE);
  /** BAR2: a memfd the client may mmap (fd owned by the device until close()). */
  readonly bar2Fd: number;
  private readonly bar2Map: NativeMapping;
  readonly irqCount = irqCounts();
  /** eventfds per IRQ index and vector (owned). */
  readonly irqFds: (number | undefined)[][] = irqCounts().map((n) => new Array<number | undefined>(n).fill(undefined));
  readonly masked: boolean[][] = irqCounts().map((n) => new Array<boolean>(n).fill(false));
  readonly dma: DmaMapRecord[] = [];
  private jobs: Promise<void> = Promise.resolve();

  constructor(readonly name = 'test-device') {
    this.bar2Fd = native.memfdCreate(`${name}-bar2`, BAR2_SIZE);
    this.bar2Map = native.mmapFd(this.bar2Fd, 0, BAR2_SIZE, native.PROT_READ | native.PROT_WRITE);
    this.resetConfig();
  }

  /** Release the BAR2 memfd and mapping (after the server stopped). */
  close(): void {
    this.bar2Map.unmap();
    native.closeFd(this.bar2Fd);
    for (const vectors of this.irqFds) for (let v = 0; v < vectors.length; v++) this.closeIrq(vectors, v);
    this.unmapAll();
  }

  private get cfg(): DataView {
    return new DataView(this.config.buffer);
  }
  private get regs(): DataView {
    return new DataView(this.bar0.buffer);
  }

  private resetConfig(): void {
    this.config.fill(0);
    const c = this.cfg;
    c.setUint16(0x00, TEST_VENDOR, true);
    c.setUint16(0x02, TEST_DEVICE, true);
    c.setUint16(0x06, 0x0010, true); // status: capability list
    c.setUint8(0x08, 0x01); // revision
    c.setUint8(0x0b, 0xff); // class: unassigned
    c.setUint32(0x10, 0x0, true); // BAR0 mem32
    c.setUint32(0x18, 0x8, true); // BAR2 mem32 prefetchable
    c.setUint16(0x2c, TEST_VENDOR, true);
    c.setUint16(0x2e, 0x0001, true);
    c.setUint8(0x34, 0x40); // capabilities pointer
    c.setUint8(0x3d, 0x01); // interrupt pin A
    // MSI-X at 0x40: table and PBA in BAR0 at 0x800 / 0xc00.
    c.setUint8(0x40, 0x11);
    c.setUint8(0x41, 0x50);
    c.setUint16(0x42, MSIX_VECTORS - 1, true);
    c.setUint32(0x44, 0x800, true);
    c.setUint32(0x48, 0xc00, true);
    // Vendor-specific at 0x50, end of list.
    c.setUint8(0x50, 0x09);
    c.setUint8(0x51, 0x00);
    c.setUint8(0x52, 0x08);
  }

  regionInfo(index: number): RegionDescription {
    switch (index) {
      case PciRegion.BAR0:
        return { flags: RegionFlag.READ | RegionFlag.WRITE, size: BigInt(BAR0_SIZE), offset: 0n };
      case PciRegion.BAR2:
        return {
          flags: RegionFlag.READ | RegionFlag.WRITE | RegionFlag.MMAP,
          size: BigInt(BAR2_SIZE),
          offset: 0n,
          sparseAreas: [{ offset: 0n, size: BigInt(BAR2_SIZE) }],
          fd: this.bar2Fd,
        };
      case PciRegion.CONFIG:
        return { flags: RegionFlag.READ | RegionFlag.WRITE, size: BigInt(CONFIG_SIZE), offset: 0n };
      default:
        return { flags: 0, size: 0n, offset: 0n };
    }
  }

  irqInfo(index: number): IrqInfo {
    return {
      flags: IrqInfoFlag.EVENTFD | (index === PciIrq.INTX ? IrqInfoFlag.MASKABLE : 0),
      count: this.irqCount[index] ?? 0,
    };
  }

  regionRead(index: number, offset: bigint, count: number): Uint8Array {
    const off = Number(offset);
    switch (index) {
      case PciRegion.CONFIG:
        return this.config.slice(off, off + count);
      case PciRegion.BAR0:
        return this.bar0.slice(off, off + count);
      case PciRegion.BAR2:
        return new Uint8Array(this.bar2Map.buffers[0]!, off, count).slice();
      default:
        throw VfioUserError.invalid(`region ${index} has no data`);
    }
  }

  regionWrite(index: number, offset: bigint, data: Uint8Array): void {
    const off = Number(offset);
    switch (index) {
      case PciRegion.CONFIG:
        return this.configWrite(off, data);
      case PciRegion.BAR0:
        this.bar0.set(data, off);
        if (data.length === 4) this.registerWrite(off, this.regs.getUint32(off, true));
        return;
      case PciRegion.BAR2:
        new Uint8Array(this.bar2Map.buffers[0]!, off, data.length).set(data);
        return;
      default:
        throw VfioUserError.invalid(`region ${index} has no data`);
    }
  }

  private configWrite(off: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const at = off + i;
      if (at >= 0x10 && at < 0x28) continue; // BARs: applied below
      if (at === 0x04 || at === 0x05 || at === 0x3c || (at >= 0x53 && at < 0x58)) this.config[at] = data[i]!;
      // other bytes are read-only: silently ignored, as on hardware
    }
    // BAR registers: take whole dwords written, masked to the BAR size.
    for (let bar = 0; bar < 6; bar++) {
      const reg = 0x10 + bar * 4;
      if (off > reg || off + data.length < reg + 4) continue;
      const value = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(reg - off, true);
      const size = bar === 0 ? BAR0_SIZE : bar === 2 ? BAR2_SIZE : 0;
      const typeBits = this.cfg.getUint32(reg, true) & 0xf;
      this.cfg.setUint32(reg, size === 0 ? 0 : ((value & ~(size - 1) & ~0xf) | typeBits) >>> 0, true);
    }
  }

  private registerWrite(off: number, value: number): void {
    const r = this.regs;
    switch (off) {
      case Reg.DOORBELL:
        if (value !== 1) return;
        r.setUint32(Reg.STATUS, 0, true);
        this.jobs = this.jobs.then(() => this.runDmaJob());
        return;
      case Reg.IRQ:
        this.signal(value);
        return;
    }
  }

  private async runDmaJob(): Promise<void> {
    const r = this.regs;
    const src = BigInt(r.getUint32(Reg.DMA_SRC_LO, true)) | (BigInt(r.getUint32(Reg.DMA_SRC_HI, true)) << 32n);
    const dst = BigInt(r.getUint32(Reg.DMA_DST_LO, true)) | (BigInt(r.getUint32(Reg.DMA_DST_HI, true)) << 32n);
    const len = r.getUint32(Reg.DMA_LEN, true);
    try {
      const data = await this.dmaRead(src, len);
      await this.dmaWrite(dst, data);
      r.setUint32(Reg.STATUS, 1, true);
      r.setUint32(Reg.JOBS, r.getUint32(Reg.JOBS, true) + 1, true);
    } catch (err) {
      const errno = err instanceof VfioUserError ? err.errno : ((err as { errno?: number }).errno ?? Errno.EIO);
      r.setUint32(Reg.STATUS, (0x80000000 | errno) >>> 0, true);
    }
    this.signal(0);
  }

  /** Signal `vector` of the first index (MSI-X, MSI, INTx) that has an eventfd installed. */
  signal(vector: number): void {
    for (const index of [PciIrq.MSIX, PciIrq.MSI, PciIrq.INTX]) {
      const fds = this.irqFds[index]!;
      if (!fds.some((fd) => fd !== undefined)) continue;
      const fd = fds[vector];
      if (fd !== undefined) native.eventfdWrite(fd);
      return;
    }
  }

  private findDma(addr: bigint, length: number): DmaMapRecord {
    const end = addr + BigInt(length);
    const range = this.dma.find((m) => addr >= m.addr && end <= m.addr + m.size);
    if (!range) throw new VfioUserError(Errno.EFAULT, `no DMA map covers 0x${addr.toString(16)}+${length}`);
    return range;
  }

  /** Read guest memory: directly from an fd-backed map, else by DMA_READ. */
  async dmaRead(addr: bigint, length: number): Promise<Uint8Array> {
    const m = this.findDma(addr, length);
    if (m.mapping) return new Uint8Array(m.mapping.buffers[0]!, Number(addr - m.addr), length).slice();
    if (!this.port) throw new VfioUserError(Errno.ENOTCONN, 'no client');
    return this.port.dmaRead(addr, length);
  }

  /** Write guest memory: directly into an fd-backed map, else by DMA_WRITE. */
  async dmaWrite(addr: bigint, data: Uint8Array): Promise<void> {
    const m = this.findDma(addr, data.length);
    if ((m.flags & 2) === 0) throw new VfioUserError(Errno.EPERM, 'DMA map is read-only');
    if (m.mapping) {
      new Uint8Array(m.mapping.buffers[0]!, Number(addr - m.addr), data.length).set(data);
      return;
    }
    if (!this.port) throw new VfioUserError(Errno.ENOTCONN, 'no client');
    await this.port.dmaWrite(addr, data);
  }

  private closeIrq(vectors: (number | undefined)[], v: number): void {
    const fd = vectors[v];
    if (fd !== undefined) native.closeFd(fd);
    vectors[v] = undefined;
  }

  setIrqs(req: SetIrqsRequest, fds: number[]): void {
    const vectors = this.irqFds[req.index]!;
    const data = req.flags & IrqSetFlag.DATA_TYPE_MASK;
    const action = req.flags & IrqSetFlag.ACTION_TYPE_MASK;
    if (action === IrqSetFlag.ACTION_TRIGGER && data === IrqSetFlag.DATA_EVENTFD) {
      for (let i = 0; i < req.count; i++) {
        this.closeIrq(vectors, req.start + i);
        if (fds.length > 0) vectors[req.start + i] = fds[i];
      }
      for (const fd of fds.slice(req.count)) native.closeFd(fd);
      return;
    }
    for (const fd of fds) native.closeFd(fd);
    if (action === IrqSetFlag.ACTION_TRIGGER && data === IrqSetFlag.DATA_NONE && req.count === 0) {
      for (let v = 0; v < vectors.length; v++) this.closeIrq(vectors, v);
      return;
    }
    for (let i = 0; i < req.count; i++) {
      if (data === IrqSetFlag.DATA_BOOL && req.bools?.[i] !== 1) continue;
      const v = req.start + i;
      if (action === IrqSetFlag.ACTION_TRIGGER) {
        const fd = vectors[v];
        if (fd !== undefined) native.eventfdWrite(fd);
      } else {
        this.masked[req.index]![v] = action === IrqSetFlag.ACTION_MASK;
      }
    }
  }

  dmaMap(req: DmaMapRequest): void {
    const end = req.addr + req.size;
    try {
      if (req.size === 0n) throw VfioUserError.invalid('zero-sized DMA map');
      const same = this.dma.find((m) => m.addr === req.addr && m.size === req.size);
      if (same?.flags === req.flags && same.offset === req.offset && !same.mapping && req.fd === undefined) return; // identical re-map
      if (this.dma.some((m) => req.addr < m.addr + m.size && m.addr < end)) {
        throw VfioUserError.invalid('DMA map overlaps an existing one');
      }
      const range: DmaMapRecord = { addr: req.addr, size: req.size, flags: req.flags, offset: req.offset };
      if (req.fd !== undefined) {
        const prot = native.PROT_READ | ((req.flags & 2) !== 0 ? native.PROT_WRITE : 0);
        try {
          range.mapping = native.mmapFd(req.fd, Number(req.offset), Number(req.size), prot);
        } catch (err) {
          throw VfioUserError.invalid(`mmap failed: ${(err as Error).message}`);
        }
      }
      this.dma.push(range);
    } finally {
      if (req.fd !== undefined) native.closeFd(req.fd);
    }
  }

  dmaUnmap(addr: bigint, size: bigint, all: boolean): void {
    if (all) return this.unmapAll();
    const i = this.dma.findIndex((m) => m.addr === addr && m.size === size);
    if (i < 0) throw new VfioUserError(Errno.ENOENT, 'no such DMA map');
    this.dma.splice(i, 1)[0]!.mapping?.unmap();
  }

  private unmapAll(): void {
    for (const m of this.dma.splice(0)) m.mapping?.unmap();
  }

  async reset(reason: ResetReason): Promise<void> {
    await this.jobs;
    this.resets.push(reason);
    this.bar0.fill(0);
    this.resetConfig();
  }

  attach(port: ClientPort): void {
    this.attaches++;
    this.port = port;
  }

  async detach(): Promise<void> {
    this.port = undefined;
    this.unmapAll();
    for (const vectors of this.irqFds) for (let v = 0; v < vectors.length; v++) this.closeIrq(vectors, v);
    await this.reset('lost-connection');
    this.detaches++;
  }

  // ---- DeviceUnderTest ----

  readonly expectedCapabilities = [
    { id: 0x11, offset: 0x40, extended: false },
    { id: 0x09, offset: 0x50, extended: false },
  ];

  dmaRanges(): { addr: bigint; size: bigint; mapped: boolean }[] {
    return this.dma.map((m) => ({ addr: m.addr, size: m.size, mapped: m.mapping !== undefined }));
  }

  hasEventfd(index: number, vector: number): boolean {
    return this.irqFds[index]?.[vector] !== undefined;
  }
}
