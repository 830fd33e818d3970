/**
 * A tiny NVMe host driver for tests: drives an NVMe controller on a real
 * socket through the TypeScript vfio-user client, with guest memory that is
 * either a shared memfd (DMA by mmap) or plain bytes (DMA_READ/WRITE). Polls
 * completion queues in guest memory (phase tag) like a polling driver.
 *
 * NvmeGuest drives any controller a socket leads to (a daemon process, a
 * proxy); NvmeTestHost also serves the controller in this process. Like a
 * real driver it turns on memory decoding and bus mastering in the Command
 * register before it touches the controller.
 */
import { GuestMemory, VfioUserClient, type ClientOptions } from '../../client/index.js';
import { NvmeController, type NvmeControllerOptions } from '../../devices/nvme/index.js';
import { PciIrq } from '../../protocol/constants.js';
import { serve, type DeviceServer } from '../../server/server.js';
import { tempSocketPath } from '../helpers/temp.js';

/** Guest-physical base of the test's memory: above 4 GiB with bit 31 set, to catch offset and sign mix-ups. */
export const GPA = 0x1_8000_0000n;
const MEM_SIZE = 8 << 20;

/** Fixed layout (offsets into guest memory). */
export const Layout = {
  ADMIN_SQ: 0x0000,
  ADMIN_CQ: 0x1000,
  IO_SQ: 0x2000,
  IO_CQ: 0x3000,
  SHADOW_DB: 0x4000,
  EVENT_IDX: 0x5000,
  /** 1 MiB of data pages. */
  DATA: 0x10_0000,
  /** PRP list pages. */
  PRP_LISTS: 0x20_0000,
  /** A second data area. */
  DATA2: 0x30_0000,
} as const;

const QSIZE = 64;

/** Offset of the PCI Command register in config space. */
const PCI_COMMAND = 0x04;

export interface Sqe {
  opcode: number;
  nsid?: number;
  cid?: number;
  prp1?: bigint;
  prp2?: bigint;
  cdw10?: number;
  cdw11?: number;
  cdw12?: number;
  cdw13?: number;
  cdw14?: number;
  cdw15?: number;
  /** Raw CDW0 flags (FUSE/PSDT bits) to OR in. */
  flags?: number;
}

export interface Cqe {
  result: number;
  sqhd: number;
  sqid: number;
  cid: number;
  /** 15-bit status (0 = success). */
  status: number;
}

interface QueuePair {
  qid: number;
  /** Offsets of the rings in guest memory. */
  sq: number;
  cq: number;
  sqSize: number;
  cqSize: number;
  tail: number;
  head: number;
  phase: number;
}

/** PCI Command register: memory decoding and bus mastering (what a driver's pci_enable_device + pci_set_master do). */
export const COMMAND_MEMORY_MASTER = 0x6;

const u32 = (v: number): Uint8Array => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
};

/** Where and how big a queue pair is (offsets into guest memory). */
export interface QueuePairSpec {
  qid: number;
  sqAt: number;
  cqAt: number;
  sqSize: number;
  cqSize: number;
  /** MSI-X vector of the CQ (default: the qid). */
  vector?: number;
  /** Interrupts enabled (default true). */
  ien?: boolean;
}

/** A guest driver for an NVMe controller on the far end of a vfio-user socket. */
export class NvmeGuest {
  private cid = 1;
  private readonly queues = new Map<number, QueuePair>();
  /** Use shadow doorbells for I/O queues (after enableShadowDoorbells). */
  shadow = false;
  /**
   * With shadow doorbells, also ring the CQ head MMIO doorbell when the
   * controller's EventIdx asks (as Linux does; the controller asks when
   * completions wait for CQ room). Off by default: the tests that count
   * doorbell messages expect none for CQ heads.
   */
  cqEventIdx = false;

  protected constructor(
    readonly client: VfioUserClient,
    /** The guest memory bytes (the device sees them at GPA). */
    readonly mem: Uint8Array,
    /** The memfd behind `mem` when shared. */
    readonly guestMemory: GuestMemory | undefined,
  ) {}

  /** Connect a client and map MEM_SIZE of guest memory (shared memfd unless `shared` is false), MSI-X on, bus mastering on. */
  protected static async attach(
    socketPath: string,
    shared: boolean,
    options: ClientOptions = {},
  ): Promise<{ client: VfioUserClient; mem: Uint8Array; guestMemory: GuestMemory | undefined }> {
    const client = await VfioUserClient.connect(socketPath, options);
    try {
      let mem: Uint8Array;
      let g: GuestMemory | undefined;
      if (shared) {
        g = client.createGuestMemory(MEM_SIZE);
        await client.dmaMap({ addr: GPA, backing: g });
        mem = g.bytes;
      } else {
        mem = new Uint8Array(MEM_SIZE);
        await client.dmaMap({ addr: GPA, backing: mem });
      }
      await client.enableIrqs(PciIrq.MSIX, 2);
      await client.cfgWrite16(PCI_COMMAND, COMMAND_MEMORY_MASTER);
      return { client, mem, guestMemory: g };
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /** A driver for the controller served on `socketPath` (another process, a proxy). */
  static async connect(socketPath: string, shared = true, options: ClientOptions = {}): Promise<NvmeGuest> {
    const a = await NvmeGuest.attach(socketPath, shared, options);
    return new NvmeGuest(a.client, a.mem, a.guestMemory);
  }

  get view(): DataView {
    return new DataView(this.mem.buffer, this.mem.byteOffset, this.mem.byteLength);
  }

  async reg(offset: number): Promise<number> {
    const b = await this.client.regionRead(0, offset, 4);
    return new DataView(b.buffer, b.byteOffset).getUint32(0, true);
  }

  async setReg(offset: number, value: number, posted = false): Promise<void> {
    await this.client.regionWrite(0, offset, u32(value), { posted });
  }

  async waitReg(offset: number, mask: number, want: number, timeoutMs = 5000): Promise<number> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const v = await this.reg(offset);
      if ((v & mask) === want) return v;
      if (Date.now() > until)
        throw new Error(
          `register 0x${offset.toString(16)} = 0x${v.toString(16)}, wanted 0x${want.toString(16)} under mask 0x${mask.toString(16)}`,
        );
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /** Program the admin queues and set CC.EN; resolves when CSTS.RDY. */
  async enable(timeoutMs = 5000): Promise<void> {
    this.mem.fill(0, 0, Layout.DATA); // fresh queues, as a driver zeroes its rings
    this.shadow = false;
    this.queues.clear();
    await this.setReg(0x24, ((QSIZE - 1) << 16) | (QSIZE - 1));
    const asq = GPA + BigInt(Layout.ADMIN_SQ);
    const acq = GPA + BigInt(Layout.ADMIN_CQ);
    await this.setReg(0x28, Number(asq & 0xffffffffn));
    await this.setReg(0x2c, Number(asq >> 32n));
    await this.setReg(0x30, Number(acq & 0xffffffffn));
    await this.setReg(0x34, Number(acq >> 32n));
    await this.setReg(0x14, (6 << 16) | (4 << 20) | 1);
    await this.waitReg(0x1c, 1, 1, timeoutMs);
    this.track({ qid: 0, sqAt: Layout.ADMIN_SQ, cqAt: Layout.ADMIN_CQ, sqSize: QSIZE, cqSize: QSIZE });
  }

  /** Clear CC.EN and wait for RDY to drop. */
  async disable(timeoutMs = 5000): Promise<void> {
    await this.setReg(0x14, 0);
    await this.waitReg(0x1c, 1, 0, timeoutMs);
    this.queues.clear();
  }

  /** Start tracking a queue pair the controller has (or will have): place/ring/reap use it. */
  track(spec: QueuePairSpec): void {
    this.queues.set(spec.qid, {
      qid: spec.qid,
      sq: spec.sqAt,
      cq: spec.cqAt,
      sqSize: spec.sqSize,
      cqSize: spec.cqSize,
      tail: 0,
      head: 0,
      phase: 1,
    });
  }

  /** Create I/O CQ and SQ `spec.qid` (after Set Features Number of Queues) and track them. */
  async createQueuePair(spec: QueuePairSpec): Promise<void> {
    this.mem.fill(0, spec.cqAt, spec.cqAt + spec.cqSize * 16);
    expectOk(
      await this.admin({
        opcode: 0x05,
        prp1: GPA + BigInt(spec.cqAt),
        cdw10: ((spec.cqSize - 1) << 16) | spec.qid,
        cdw11: ((spec.vector ?? spec.qid) << 16) | ((spec.ien ?? true) ? 2 : 0) | 1,
      }),
    );
    expectOk(
      await this.admin({
        opcode: 0x01,
        prp1: GPA + BigInt(spec.sqAt),
        cdw10: ((spec.sqSize - 1) << 16) | spec.qid,
        cdw11: (spec.qid << 16) | 1,
      }),
    );
    this.track(spec);
  }

  /** Set Features queues, Create CQ 1 (vector 1) and SQ 1. */
  async createIoQueues(): Promise<void> {
    expectOk(await this.admin({ opcode: 0x09, cdw10: 0x07, cdw11: 0 }));
    await this.createQueuePair({ qid: 1, sqAt: Layout.IO_SQ, cqAt: Layout.IO_CQ, sqSize: QSIZE, cqSize: QSIZE });
  }

  /** Doorbell Buffer Config with the layout's pages; shadow doorbells are then used for queue 1. */
  async enableShadowDoorbells(): Promise<Cqe> {
    const c = await this.admin({
      opcode: 0x7c,
      prp1: GPA + BigInt(Layout.SHADOW_DB),
      prp2: GPA + BigInt(Layout.EVENT_IDX),
    });
    if (c.status === 0) this.shadow = true;
    return c;
  }

  /** The tail the driver will ring for queue `qid`. */
  tail(qid: number): number {
    return this.queues.get(qid)!.tail;
  }

  /** Write an SQE into queue `qid` without ringing. Returns its cid. */
  place(qid: number, e: Sqe): number {
    const q = this.queues.get(qid)!;
    const cid = e.cid ?? (this.cid = (this.cid + 1) & 0xffff);
    const at = q.sq + q.tail * 64;
    this.mem.fill(0, at, at + 64);
    const v = this.view;
    v.setUint32(at, (e.opcode | (e.flags ?? 0) | (cid << 16)) >>> 0, true);
    v.setUint32(at + 4, e.nsid ?? 0, true);
    v.setBigUint64(at + 24, e.prp1 ?? 0n, true);
    v.setBigUint64(at + 32, e.prp2 ?? 0n, true);
    [e.cdw10, e.cdw11, e.cdw12, e.cdw13, e.cdw14, e.cdw15].forEach((d, i) =>
      v.setUint32(at + 40 + 4 * i, (d ?? 0) >>> 0, true),
    );
    q.tail = (q.tail + 1) % q.sqSize;
    return cid;
  }

  /** Tell the controller about new entries: MMIO doorbell (posted), or the shadow doorbell (+ MMIO only when EventIdx asks). */
  async ring(qid: number): Promise<void> {
    const q = this.queues.get(qid)!;
    if (this.shadow && qid !== 0) {
      const v = this.view;
      const slot = Layout.SHADOW_DB + 2 * qid * 4;
      const old = v.getUint32(slot, true);
      v.setUint32(slot, q.tail, true);
      const ei = v.getUint32(Layout.EVENT_IDX + 2 * qid * 4, true);
      if (((q.tail - ei - 1) & 0xffff) >= ((q.tail - old) & 0xffff)) return; // no event needed
    }
    await this.setReg(0x1000 + 2 * qid * 4, q.tail, true);
  }

  /** The next completion on queue `qid`'s CQ if one is there now (not consumed). */
  peek(qid: number): Cqe | undefined {
    const q = this.queues.get(qid)!;
    const o = q.cq + q.head * 16;
    const v = this.view;
    if ((v.getUint16(o + 14, true) & 1) !== q.phase) return undefined;
    const dw3 = v.getUint32(o + 12, true);
    return {
      result: v.getUint32(o, true),
      sqhd: v.getUint16(o + 8, true),
      sqid: v.getUint16(o + 10, true),
      cid: dw3 & 0xffff,
      status: dw3 >>> 17,
    };
  }

  /** Consume the completion peek() shows, without telling the controller (see ringCqHead). */
  consume(qid: number): Cqe | undefined {
    const q = this.queues.get(qid)!;
    const c = this.peek(qid);
    if (!c) return undefined;
    q.head = (q.head + 1) % q.cqSize;
    if (q.head === 0) q.phase ^= 1;
    return c;
  }

  /**
   * Tell the controller how far the driver consumed queue `qid`'s CQ: the
   * MMIO doorbell, or with shadow doorbells the shadow slot, and (with
   * `cqEventIdx`) the MMIO doorbell too when the controller's EventIdx asks
   * for it (as Linux's nvme_dbbuf_update_and_check_event).
   */
  async ringCqHead(qid: number): Promise<void> {
    const q = this.queues.get(qid)!;
    if (this.shadow && qid !== 0) {
      const v = this.view;
      const slot = Layout.SHADOW_DB + (2 * qid + 1) * 4;
      const old = v.getUint32(slot, true);
      v.setUint32(slot, q.head, true);
      const ei = v.getUint32(Layout.EVENT_IDX + (2 * qid + 1) * 4, true);
      if (!this.cqEventIdx || ((q.head - ei - 1) & 0xffff) >= ((q.head - old) & 0xffff)) return; // no event needed
    }
    await this.setReg(0x1000 + (2 * qid + 1) * 4, q.head, true);
  }

  /** Wait for the next completion on queue `qid`'s CQ, consume it and ring the CQ head doorbell. */
  async reap(qid: number, timeoutMs = 5000): Promise<Cqe> {
    const until = Date.now() + timeoutMs;
    let cqe = this.consume(qid);
    while (!cqe) {
      if (Date.now() > until) throw new Error(`no completion on CQ ${qid} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 1));
      cqe = this.consume(qid);
    }
    await this.ringCqHead(qid);
    return cqe;
  }

  async submit(qid: number, e: Sqe, timeoutMs = 5000): Promise<Cqe> {
    const cid = this.place(qid, e);
    await this.ring(qid);
    const c = await this.reap(qid, timeoutMs);
    if (c.cid !== cid) throw new Error(`completion for cid ${c.cid}, expected ${cid}`);
    return c;
  }

  admin(e: Sqe, timeoutMs = 5000): Promise<Cqe> {
    return this.submit(0, e, timeoutMs);
  }

  io(e: Sqe, timeoutMs = 5000): Promise<Cqe> {
    return this.submit(1, e, timeoutMs);
  }

  /** Read/Write command for `blocks` LBAs at `slba` with explicit PRPs. */
  rw(opcode: 1 | 2 | 5, nsid: number, slba: number, blocks: number, prp1: bigint, prp2 = 0n): Sqe {
    return { opcode, nsid, prp1, prp2, cdw10: slba >>> 0, cdw11: Math.floor(slba / 2 ** 32), cdw12: blocks - 1 };
  }

  /** Identify into DATA; returns a copy of the 4 KiB. */
  async identify(cns: number, nsid = 0, timeoutMs = 5000): Promise<{ cqe: Cqe; data: Uint8Array }> {
    this.mem.fill(0xee, Layout.DATA, Layout.DATA + 4096);
    const cqe = await this.admin({ opcode: 0x06, nsid, prp1: GPA + BigInt(Layout.DATA), cdw10: cns }, timeoutMs);
    return { cqe, data: this.mem.slice(Layout.DATA, Layout.DATA + 4096) };
  }

  /**
   * The same driver (its queues, tails, heads and phases, shadow doorbell
   * use) on another connection and guest memory: what a guest's driver is
   * after its VM was migrated (the memory is the destination's copy) or its
   * device moved to another server (the same memory, mapped there).
   */
  moveTo(client: VfioUserClient, mem: Uint8Array, guestMemory?: GuestMemory): NvmeGuest {
    const moved = new NvmeGuest(client, mem, guestMemory);
    moved.cid = this.cid;
    moved.shadow = this.shadow;
    moved.cqEventIdx = this.cqEventIdx;
    for (const [qid, q] of this.queues) moved.queues.set(qid, { ...q });
    return moved;
  }

  /** Drop the connection (the controller sees a disconnect). */
  close(): void {
    this.client.close();
  }
}

/** A driver plus the controller it drives, served in this process on a real socket. */
export class NvmeTestHost extends NvmeGuest {
  private constructor(
    readonly nvme: NvmeController,
    readonly server: DeviceServer,
    /** The socket the controller is served on (another client may connect after this one leaves). */
    readonly socketPath: string,
    client: VfioUserClient,
    mem: Uint8Array,
    guestMemory: GuestMemory | undefined,
    private readonly cleanup: () => void,
  ) {
    super(client, mem, guestMemory);
  }

  /** Serve a controller and connect a client with 8 MiB of guest memory (shared memfd unless `shared` is false). */
  static async start(options: NvmeControllerOptions, shared = true): Promise<NvmeTestHost> {
    const nvme = new NvmeController(options);
    const sock = tempSocketPath('nvme');
    const server = await serve(nvme.device, { socketPath: sock.path, log: options.log });
    const a = await NvmeGuest.attach(sock.path, shared);
    return new NvmeTestHost(nvme, server, sock.path, a.client, a.mem, a.guestMemory, () => sock.remove());
  }

  async stop(): Promise<void> {
    this.client.close();
    await this.server.close();
    await this.nvme.close();
    this.cleanup();
  }
}

export function expectOk(c: Cqe): Cqe {
  if (c.status !== 0) throw new Error(`NVMe status 0x${c.status.toString(16)} (cid ${c.cid})`);
  return c;
}

/** 15-bit status for (sct, sc) with DNR as the controller sets it. */
export function st(sct: number, sc: number, dnr = true): number {
  return sc | (sct << 8) | (dnr ? 1 << 14 : 0);
}
