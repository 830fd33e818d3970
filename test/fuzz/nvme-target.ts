/**
 * The NVMe fuzz target: an NvmeController (a memory namespace and a file
 * namespace) served in this process on a real socket, driven through the
 * TypeScript client by a guest driver that performs nvme-actions.ts. It keeps
 * only the model a driver needs to place entries (ring sizes, tails, CQ
 * heads and phases); the actions themselves are hostile.
 *
 * Even seeds map the guest RAM with its memfd (the device reads and writes it
 * directly), odd seeds without (every transfer is a DMA_READ/DMA_WRITE
 * message the client answers, and bounce buffers on the device's side).
 *
 * The liveness probe is what a driver does after a crash: DEVICE_RESET, map
 * the memory again, bus mastering and MSI-X on, a fresh admin queue, CC.EN=1,
 * and an Identify Controller whose fields must be right.
 */
import { GuestMemory, VfioUserClient } from '../../client/index.js';
import { NvmeController } from '../../devices/nvme/index.js';
import { IrqSetFlag, PciIrq, PciRegion } from '../../protocol/constants.js';
import { serve, type DeviceServer } from '../../server/server.js';
import { testLogger } from '../helpers/harness.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import {
  EXTRA_GPA,
  EXTRA_SIZE,
  GPA,
  MEM_SIZE,
  Mem,
  PROBE_ADMIN_ENTRIES,
  RING_SLOTS,
  nextNvmeAction,
  type NvmeAction,
  type PrpListEdit,
  type SqeSpec,
} from './nvme-actions.js';
import { Rng } from './rng.js';
import { FuzzFailure, tolerate, type FuzzSession, type FuzzTarget, type SessionOptions } from './target.js';

const IO_QUEUES = 4;
const SERIAL = 'VFUTS-FUZZ';
const MODEL = 'vfio-user-ts NVMe';
const DEFAULT_RING_ENTRIES = 64;
const CSTS = 0x1c;

/** What the driver believes about one queue pair: where its rings are and how far it got. */
interface QueueModel {
  sqAt: number;
  cqAt: number;
  sqSize: number;
  cqSize: number;
  tail: number;
  head: number;
  phase: number;
}

function defaultQueue(q: number): QueueModel {
  if (q === 0)
    return {
      sqAt: Mem.ADMIN_SQ,
      cqAt: Mem.ADMIN_CQ,
      sqSize: PROBE_ADMIN_ENTRIES,
      cqSize: PROBE_ADMIN_ENTRIES,
      tail: 0,
      head: 0,
      phase: 1,
    };
  const base = Mem.RINGS + (q - 1) * Mem.RING_STRIDE;
  return {
    sqAt: base,
    cqAt: base + Mem.RING_CQ,
    sqSize: DEFAULT_RING_ENTRIES,
    cqSize: DEFAULT_RING_ENTRIES,
    tail: 0,
    head: 0,
    phase: 1,
  };
}

/** The offset of guest address `addr` in the fuzzer's memory, if it is there. */
function offsetOf(addr: string): number | undefined {
  const a = Number(BigInt(addr));
  return a >= GPA && a < GPA + MEM_SIZE ? a - GPA : undefined;
}

/** `size` bytes little-endian of the 64-bit hex `value`. */
function leBytes(value: string, size: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(value)), true);
  return b.subarray(0, size);
}

const u32 = (v: number): Uint8Array => leBytes('0x' + (v >>> 0).toString(16), 4);

const sleep = (ms: number) => new Promise<void>((r) => (ms === 0 ? setImmediate(r) : setTimeout(r, ms)));

class NvmeSession implements FuzzSession<NvmeAction> {
  deathReason: string | undefined;
  /** Completions the guest consumed: successful, and with an error status. */
  readonly stats = { completions: 0, errors: 0 };
  private closing = false;
  private readonly queues = new Map<number, QueueModel>();
  private readonly mem: Uint8Array;
  private readonly view: DataView;
  private msixCap = 0;
  private expressCap = 0;

  private constructor(
    private readonly nvme: NvmeController,
    private readonly server: DeviceServer,
    private readonly client: VfioUserClient,
    private readonly ram: GuestMemory,
    private readonly extra: Uint8Array,
    private readonly dir: TempDir,
    private readonly hangMs: number,
    /** Map the RAM with its fd (device DMA by mmap) or without (by DMA_READ/DMA_WRITE messages). */
    private readonly shareRam: boolean,
  ) {
    this.mem = ram.bytes;
    this.view = ram.dataView();
    void client.closed.then((reason) => {
      if (!this.closing) this.deathReason = reason;
    });
    this.resetModel();
  }

  static async start(options: SessionOptions): Promise<NvmeSession> {
    const dir = tempDir('nvme-fuzz-');
    const log = testLogger();
    const nvme = new NvmeController({
      name: 'nvme-fuzz',
      serial: SERIAL,
      model: MODEL,
      namespaces: [
        { size: 8 << 20, lbaSize: 512 },
        { path: dir.file('ns2.img'), size: 8 << 20, lbaSize: 4096 },
      ],
      queues: IO_QUEUES,
      log,
    });
    const server = await serve(nvme.device, { socketPath: dir.file('nvme.sock'), log });
    const client = await VfioUserClient.connect(dir.file('nvme.sock'), { timeoutMs: options.hangMs, log });
    const ram = client.createGuestMemory(MEM_SIZE);
    const shareRam = options.seed % 2 === 0;
    const s = new NvmeSession(nvme, server, client, ram, new Uint8Array(EXTRA_SIZE), dir, options.hangMs, shareRam);
    for (const c of await client.capabilities()) {
      if (!c.extended && c.id === 0x11) s.msixCap = c.offset;
      if (!c.extended && c.id === 0x10) s.expressCap = c.offset;
    }
    // PRP list pages start out full of good data page pointers: long transfers are valid unless an action says otherwise.
    for (let p = 0; p < Mem.PRP_LIST_PAGES; p++)
      for (let j = 0; j < 512; j++)
        s.view.setBigUint64(
          Mem.PRP_LISTS + p * 4096 + j * 8,
          BigInt(GPA + Mem.DATA + ((p * 37 + j) % Mem.DATA_PAGES) * 4096),
          true,
        );
    return s;
  }

  private resetModel(): void {
    this.queues.clear();
    for (let q = 0; q <= RING_SLOTS; q++) this.queues.set(q, defaultQueue(q));
  }

  async execute(a: NvmeAction): Promise<void> {
    const c = this.client;
    switch (a.k) {
      case 'enable': {
        const q = this.queues.get(0)!;
        q.sqSize = (a.aqa & 0xfff) + 1;
        q.cqSize = ((a.aqa >>> 16) & 0xfff) + 1;
        q.tail = q.head = 0;
        q.phase = 1;
        this.mem.fill(0, Mem.ADMIN_SQ, Mem.PROBE_DATA);
        const asq = BigInt(a.asq);
        const acq = BigInt(a.acq);
        await tolerate(this.reg(0x24, a.aqa));
        await tolerate(this.reg(0x28, Number(asq & 0xffffffffn)));
        await tolerate(this.reg(0x2c, Number((asq >> 32n) & 0xffffffffn)));
        await tolerate(this.reg(0x30, Number(acq & 0xffffffffn)));
        await tolerate(this.reg(0x34, Number((acq >> 32n) & 0xffffffffn)));
        await tolerate(this.reg(0x14, a.cc));
        return;
      }
      case 'cc':
        return tolerate(this.reg(0x14, a.value));
      case 'admin':
        if (a.list) this.editList(a.list);
        this.place(0, a.sqe);
        if (a.ring) await this.ring(0);
        return;
      case 'io':
        if (a.list) this.editList(a.list);
        if (this.queues.has(a.q)) this.place(a.q, a.sqe);
        if (a.ring) await this.ring(a.q);
        return;
      case 'createPair':
        return this.createPair(a);
      case 'delete':
        for (let i = 0; i < a.times; i++) this.place(0, this.cmd(a.sq ? 0x00 : 0x04, [a.qid & 0xffff]));
        return this.ring(0);
      case 'doorbell': {
        const m = this.queues.get(a.qid);
        const value = a.relative && m ? Math.max(0, (a.cq ? m.head : m.tail) + (a.value % 5) - 2) : a.value;
        return tolerate(c.regionWrite(0, 0x1000 + (a.qid * 2 + (a.cq ? 1 : 0)) * 4, u32(value), { posted: a.posted }));
      }
      case 'bar0Write':
        return tolerate(c.regionWrite(0, a.offset, leBytes(a.value, a.size), { posted: a.posted }));
      case 'bar0Read':
        return tolerate(c.regionRead(0, a.offset, a.size));
      case 'bar4Write':
        return tolerate(c.regionWrite(4, a.offset, leBytes(a.value, a.size)));
      case 'shadow':
        this.view.setUint32((a.eventIdx ? Mem.EVENT_IDX : Mem.SHADOW_DB) + a.slot * 4, a.value >>> 0, true);
        return;
      case 'drain':
        return this.drain(a.q);
      case 'unmap':
        if (a.what === 'all') return tolerate(c.dmaUnmapAll());
        if (a.what === 'ram') return tolerate(c.dmaUnmap(BigInt(GPA), BigInt(MEM_SIZE)));
        if (a.what === 'extra') return tolerate(c.dmaUnmap(BigInt(EXTRA_GPA), BigInt(EXTRA_SIZE)));
        return tolerate(c.dmaUnmap(BigInt(GPA + a.page * 4096), BigInt(a.pages * 4096)));
      case 'remap':
        return tolerate(this.mapMemory());
      case 'reset':
        this.resetModel();
        return tolerate(c.reset());
      case 'flr':
        this.resetModel();
        return tolerate(c.cfgWrite16(this.expressCap + 8, 0x8000));
      case 'irqs':
        return this.irqs(a);
      case 'command':
        return tolerate(c.cfgWrite16(0x04, a.value));
      case 'msixControl':
        return tolerate(c.cfgWrite16(this.msixCap + 2, a.value));
      case 'cfgWrite':
        return tolerate(c.regionWrite(PciRegion.CONFIG, a.offset, u32(a.value).subarray(0, a.size)));
      case 'scribble':
        this.mem.set(a.bytes.slice(0, MEM_SIZE - a.offset), a.offset);
        return;
      case 'wait':
        return sleep(a.ms);
    }
  }

  /** DMA_UNMAP everything, then map the memfd RAM and the fd-less range again. */
  private async mapMemory(): Promise<void> {
    await this.client.dmaUnmapAll();
    await this.client.dmaMap({ addr: BigInt(GPA), backing: this.ram, shareFd: this.shareRam });
    await this.client.dmaMap({ addr: BigInt(EXTRA_GPA), backing: this.extra, shareFd: false });
  }

  private reg(offset: number, value: number): Promise<void> {
    return this.client.regionWrite(0, offset, u32(value));
  }

  private cmd(opcode: number, cdw: number[], prp1 = '0x0'): SqeSpec {
    return { opcode, flags: 0, cid: 0, nsid: 0, prp1, prp2: '0x0', cdw };
  }

  private editList(e: PrpListEdit): void {
    e.at.forEach((at, i) =>
      this.view.setBigUint64(Mem.PRP_LISTS + e.page * 4096 + at * 8, BigInt.asUintN(64, BigInt(e.values[i]!)), true),
    );
  }

  /** Write `e` at queue `q`'s tail (if the ring is in our memory) and advance the tail. */
  private place(q: number, e: SqeSpec): void {
    const m = this.queues.get(q)!;
    const at = m.sqAt + (m.tail % m.sqSize) * 64;
    if (at + 64 <= MEM_SIZE) {
      const v = this.view;
      this.mem.fill(0, at, at + 64);
      v.setUint32(at, (e.opcode | (e.flags << 8) | (e.cid << 16)) >>> 0, true);
      v.setUint32(at + 4, e.nsid >>> 0, true);
      v.setBigUint64(at + 24, BigInt.asUintN(64, BigInt(e.prp1)), true);
      v.setBigUint64(at + 32, BigInt.asUintN(64, BigInt(e.prp2)), true);
      e.cdw.forEach((d, i) => v.setUint32(at + 40 + 4 * i, d >>> 0, true));
    }
    m.tail = (m.tail + 1) % m.sqSize;
  }

  /** The SQ tail doorbell of `q`, posted as a driver's MMIO write is. */
  private ring(q: number): Promise<void> {
    const tail = this.queues.get(q)?.tail ?? 0;
    return tolerate(this.client.regionWrite(0, 0x1000 + q * 8, u32(tail), { posted: true }));
  }

  private async createPair(a: Extract<NvmeAction, { k: 'createPair' }>): Promise<void> {
    const slot = defaultQueue(a.q >= 1 && a.q <= RING_SLOTS ? a.q : 1);
    const m: QueueModel = {
      sqAt: offsetOf(a.sqAt) ?? slot.sqAt,
      cqAt: offsetOf(a.cqAt) ?? slot.cqAt,
      sqSize: Math.max(1, a.sqSize),
      cqSize: Math.max(1, a.cqSize),
      tail: 0,
      head: 0,
      phase: 1,
    };
    if (a.q >= 1 && a.q <= RING_SLOTS) {
      this.queues.set(a.q, m);
      this.mem.fill(0, m.cqAt, Math.min(MEM_SIZE, m.cqAt + m.cqSize * 16));
    }
    this.place(0, this.cmd(0x09, [0x07, ((IO_QUEUES - 1) << 16) | (IO_QUEUES - 1)]));
    this.place(
      0,
      this.cmd(0x05, [(((a.cqSize - 1) & 0xffff) << 16) | (a.q & 0xffff), (a.iv << 16) | a.cqFlags], a.cqAt),
    );
    this.place(
      0,
      this.cmd(0x01, [(((a.sqSize - 1) & 0xffff) << 16) | (a.q & 0xffff), (a.cqid << 16) | a.sqFlags], a.sqAt),
    );
    await this.ring(0);
  }

  /** Consume what CQ `q` holds (phase tag) and ring its head doorbell. */
  private async drain(q: number): Promise<void> {
    const m = this.queues.get(q)!;
    let n = 0;
    for (; n < m.cqSize; n++) {
      const at = m.cqAt + m.head * 16;
      if (at + 16 > MEM_SIZE || (this.view.getUint16(at + 14, true) & 1) !== m.phase) break;
      if (this.view.getUint16(at + 14, true) >>> 1 === 0) this.stats.completions++;
      else this.stats.errors++;
      m.head = (m.head + 1) % m.cqSize;
      if (m.head === 0) m.phase ^= 1;
    }
    if (n > 0) await tolerate(this.client.regionWrite(0, 0x1000 + (q * 2 + 1) * 4, u32(m.head), { posted: true }));
  }

  private irqs(a: Extract<NvmeAction, { k: 'irqs' }>): Promise<void> {
    const c = this.client;
    switch (a.op) {
      case 'enable':
        return tolerate(c.enableIrqs(a.index, a.count, a.start));
      case 'disable':
        return tolerate(c.disableIrqs(a.index));
      default: {
        const action = {
          mask: IrqSetFlag.ACTION_MASK,
          unmask: IrqSetFlag.ACTION_UNMASK,
          trigger: IrqSetFlag.ACTION_TRIGGER,
        }[a.op];
        return tolerate(
          c.setIrqs({ flags: IrqSetFlag.DATA_NONE | action, index: a.index, start: a.start, count: a.count }),
        );
      }
    }
  }

  async probe(): Promise<void> {
    if (this.deathReason !== undefined) throw new FuzzFailure('death', this.deathReason);
    const c = this.client;
    const step = async <T>(what: string, p: Promise<T>): Promise<T> => {
      try {
        return await p;
      } catch (err) {
        if (err instanceof FuzzFailure) throw err;
        const e = err as Error & { errno?: number };
        if (e.errno === 110) throw new FuzzFailure('hang', `probe: ${what}: ${e.message}`);
        throw new FuzzFailure('probe', `probe: ${what}: ${e.message}`);
      }
    };
    await step('DEVICE_RESET', c.reset());
    this.resetModel();
    await step('DMA map', this.mapMemory());
    await step('PCI command', c.cfgWrite16(0x04, 0x0006));
    // Eventfds the actions installed on other indexes go (they would count as fd growth).
    for (const index of [PciIrq.INTX, PciIrq.MSI, PciIrq.ERR, PciIrq.REQ]) await tolerate(c.disableIrqs(index));
    await step('MSI-X eventfds', c.enableIrqs(PciIrq.MSIX, IO_QUEUES + 1));
    this.mem.fill(0, Mem.ADMIN_SQ, Mem.PROBE_DATA + 4096);
    const csts0 = await step('CSTS', this.readReg(CSTS));
    if (csts0 !== 0) throw new FuzzFailure('probe', `CSTS 0x${csts0.toString(16)} after DEVICE_RESET`);
    const asq = BigInt(GPA + Mem.ADMIN_SQ);
    const acq = BigInt(GPA + Mem.ADMIN_CQ);
    await step('AQA', this.reg(0x24, ((PROBE_ADMIN_ENTRIES - 1) << 16) | (PROBE_ADMIN_ENTRIES - 1)));
    await step('ASQ', this.reg(0x28, Number(asq & 0xffffffffn)));
    await step('ASQ', this.reg(0x2c, Number(asq >> 32n)));
    await step('ACQ', this.reg(0x30, Number(acq & 0xffffffffn)));
    await step('ACQ', this.reg(0x34, Number(acq >> 32n)));
    await step('CC', this.reg(0x14, 0x460001));
    const until = Date.now() + this.hangMs;
    for (;;) {
      const csts = await step('CSTS', this.readReg(CSTS));
      if (csts & 2) throw new FuzzFailure('probe', `CSTS.CFS set after enable (0x${csts.toString(16)})`);
      if (csts & 1) break;
      if (Date.now() > until) throw new FuzzFailure('hang', `probe: CSTS.RDY not set within ${this.hangMs} ms`);
      await sleep(1);
    }
    this.mem.fill(0xee, Mem.PROBE_DATA, Mem.PROBE_DATA + 4096);
    this.place(0, { ...this.cmd(0x06, [1], '0x' + (GPA + Mem.PROBE_DATA).toString(16)), cid: 0xbeef });
    await step('SQ 0 doorbell', this.reg(0x1000, 1));
    const cqe = await this.completion(0, 'Identify Controller');
    if (cqe.status !== 0 || cqe.cid !== 0xbeef || cqe.sqid !== 0)
      throw new FuzzFailure('probe', `Identify completion ${JSON.stringify(cqe)}`);
    await step('CQ 0 doorbell', this.reg(0x1004, this.queues.get(0)!.head));
    this.checkIdentify();
    // The I/O queues a driver creates next, and one write and read back through queue 1: the fuzz
    // then starts each probe interval from a working controller.
    await this.probeCommand(0, this.cmd(0x09, [0x07, ((IO_QUEUES - 1) << 16) | (IO_QUEUES - 1)]), 'Set Features');
    for (let q = 1; q <= IO_QUEUES; q++) {
      const m = this.queues.get(q)!;
      this.mem.fill(0, m.cqAt, m.cqAt + m.cqSize * 16);
      const cq = this.cmd(0x05, [((m.cqSize - 1) << 16) | q, (q << 16) | 3], '0x' + (GPA + m.cqAt).toString(16));
      await this.probeCommand(0, cq, `Create I/O CQ ${q}`);
      const sq = this.cmd(0x01, [((m.sqSize - 1) << 16) | q, (q << 16) | 1], '0x' + (GPA + m.sqAt).toString(16));
      await this.probeCommand(0, sq, `Create I/O SQ ${q}`);
    }
    const page = (n: number) => '0x' + (GPA + Mem.PROBE_DATA - n * 4096).toString(16);
    const pattern = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + this.probes) & 0xff);
    this.probes++;
    this.mem.set(pattern, Mem.PROBE_DATA - 4096);
    this.mem.fill(0, Mem.PROBE_DATA - 8192, Mem.PROBE_DATA - 4096);
    const lba = this.probes % 64;
    await this.probeCommand(1, { ...this.cmd(0x01, [lba * 8, 0, 7], page(1)), nsid: 1 }, 'Write');
    await this.probeCommand(1, { ...this.cmd(0x02, [lba * 8, 0, 7], page(2)), nsid: 1 }, 'Read');
    if (!this.mem.subarray(Mem.PROBE_DATA - 8192, Mem.PROBE_DATA - 4096).every((b, i) => b === pattern[i]))
      throw new FuzzFailure('probe', 'the data read back differs from what was written');
  }

  private probes = 0;

  /** Submit `e` on queue `q` and wait for its successful completion. */
  private async probeCommand(q: number, e: SqeSpec, what: string): Promise<void> {
    const cid = 0x7000 + (this.probes & 0xfff);
    this.place(q, { ...e, cid });
    try {
      await this.client.regionWrite(0, 0x1000 + q * 8, u32(this.queues.get(q)!.tail));
    } catch (err) {
      throw new FuzzFailure('probe', `probe: ${what}: doorbell: ${(err as Error).message}`);
    }
    const cqe = await this.completion(q, what);
    await tolerate(this.client.regionWrite(0, 0x1000 + (q * 2 + 1) * 4, u32(this.queues.get(q)!.head)));
    if (cqe.status !== 0 || cqe.cid !== cid || cqe.sqid !== q)
      throw new FuzzFailure('probe', `probe: ${what}: completion ${JSON.stringify(cqe)}`);
  }

  private async readReg(offset: number): Promise<number> {
    const b = await this.client.regionRead(0, offset, 4);
    return new DataView(b.buffer, b.byteOffset).getUint32(0, true);
  }

  /** Wait for the next completion on CQ `q` (bounded by the hang bound). */
  private async completion(q: number, what: string): Promise<{ status: number; cid: number; sqid: number }> {
    const m = this.queues.get(q)!;
    const until = Date.now() + this.hangMs;
    const at = m.cqAt + m.head * 16;
    while ((this.view.getUint16(at + 14, true) & 1) !== m.phase) {
      if (this.deathReason !== undefined) throw new FuzzFailure('death', this.deathReason);
      if (Date.now() > until) {
        const csts = await this.readReg(CSTS).catch(() => -1);
        throw new FuzzFailure(
          'hang',
          `probe: ${what}: no completion on CQ ${q} within ${this.hangMs} ms (CSTS 0x${csts.toString(16)})`,
        );
      }
      await sleep(1);
    }
    m.head = (m.head + 1) % m.cqSize;
    const dw3 = this.view.getUint32(at + 12, true);
    return { status: dw3 >>> 17, cid: dw3 & 0xffff, sqid: this.view.getUint16(at + 10, true) };
  }

  private checkIdentify(): void {
    const d = this.mem.subarray(Mem.PROBE_DATA, Mem.PROBE_DATA + 4096);
    const v = new DataView(d.buffer, d.byteOffset, 4096);
    const text = (from: number, len: number) => new TextDecoder().decode(d.subarray(from, from + len));
    const got = {
      vid: v.getUint16(0, true),
      sn: text(4, 20),
      mn: text(24, 40),
      sqes: d[512],
      cqes: d[513],
      nn: v.getUint32(516, true),
    };
    const want = { vid: 0x4e58, sn: SERIAL.padEnd(20), mn: MODEL.padEnd(40), sqes: 0x66, cqes: 0x44, nn: 2 };
    if (JSON.stringify(got) !== JSON.stringify(want))
      throw new FuzzFailure('probe', `Identify Controller ${JSON.stringify(got)}, wanted ${JSON.stringify(want)}`);
  }

  async close(): Promise<void> {
    this.closing = true;
    this.client.close();
    await this.server.close();
    await this.nvme.close();
    this.dir.remove();
  }
}

export const nvmeTarget: FuzzTarget<NvmeAction> = {
  name: 'nvme',
  *actions(seed: number) {
    const rng = new Rng(seed);
    for (;;) yield nextNvmeAction(rng);
  },
  start: (options) => NvmeSession.start(options),
};
