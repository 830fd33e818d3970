/**
 * A small in-test Endpoint: 9 regions (BAR0 4 KiB RW, config 256 B), 5 IRQ
 * indexes, a DmaSpace, and hooks tests can set (async region reads, etc.).
 */
import type { Logger } from 'pino';
import type {
  ClientPort,
  DmaMapRequest,
  Endpoint,
  IrqInfo,
  RegionDescription,
  ResetReason,
  SetIrqsRequest,
} from '../../server/endpoint.js';
import { native } from '../../native/index.js';
import { DmaSpace } from '../../server/dma/index.js';
import { IrqInfoFlag, RegionFlag } from '../../protocol/index.js';
import { silentLogger } from '../../server/log.js';

export class TestEndpoint implements Endpoint {
  readonly name = 'test';
  readonly numRegions = 9;
  readonly numIrqs = 5;
  readonly resetSupported = true;
  readonly bar0 = new Uint8Array(4096);
  readonly config = new Uint8Array(256);
  readonly dma: DmaSpace;
  port: ClientPort | undefined;
  attaches = 0;
  detaches = 0;
  resets: ResetReason[] = [];
  irqFds: number[] = [];
  setIrqsCalls: SetIrqsRequest[] = [];
  /** When set, BAR0 reads go through it (e.g. to make them async). */
  onRead: ((offset: bigint, count: number) => Promise<Uint8Array>) | undefined;
  writes: { index: number; offset: bigint; data: Uint8Array }[] = [];
  /** An fd offered for region 1 (MMAP). */
  bar1Fd: number | undefined;

  constructor(log: Logger = silentLogger) {
    this.dma = new DmaSpace(log);
  }

  regionInfo(index: number): RegionDescription {
    if (index === 0) return { flags: RegionFlag.READ | RegionFlag.WRITE, size: 4096n, offset: 0n };
    if (index === 1 && this.bar1Fd !== undefined) {
      return {
        flags: RegionFlag.READ | RegionFlag.WRITE | RegionFlag.MMAP,
        size: 8192n,
        offset: 0n,
        fd: this.bar1Fd,
        sparseAreas: [{ offset: 4096n, size: 4096n }],
      };
    }
    if (index === 7) return { flags: RegionFlag.READ | RegionFlag.WRITE, size: 256n, offset: 0n };
    return { flags: 0, size: 0n, offset: 0n };
  }

  irqInfo(index: number): IrqInfo {
    return { flags: IrqInfoFlag.EVENTFD, count: [1, 1, 4, 1, 1][index] ?? 0 };
  }

  regionRead(index: number, offset: bigint, count: number): Uint8Array | Promise<Uint8Array> {
    if (index === 0 && this.onRead) return this.onRead(offset, count);
    const src = index === 0 ? this.bar0 : this.config;
    return src.slice(Number(offset), Number(offset) + count);
  }

  regionWrite(index: number, offset: bigint, data: Uint8Array): void {
    this.writes.push({ index, offset, data });
    (index === 0 ? this.bar0 : this.config).set(data, Number(offset));
  }

  setIrqs(request: SetIrqsRequest, fds: number[]): void {
    this.setIrqsCalls.push(request);
    for (const fd of fds) native.closeFd(fd);
  }

  dmaMap(request: DmaMapRequest): Promise<void> {
    return this.dma.map(request);
  }

  dmaUnmap(addr: bigint, size: bigint, all: boolean): Promise<void> {
    return this.dma.unmap(addr, size, all);
  }

  async reset(reason: ResetReason): Promise<void> {
    this.resets.push(reason);
  }

  attach(port: ClientPort): void {
    this.attaches++;
    this.port = port;
    this.dma.attach(port);
  }

  async detach(): Promise<void> {
    this.detaches++;
    this.port = undefined;
    await this.dma.detach();
    await this.reset('lost-connection');
  }
}
