/**
 * The GPIO fuzz target: a PCI-IDIO-16 served in this process on a real
 * socket, its inputs driven by the host through the control socket
 * (devices/gpio's control API), and a hostile guest on the vfio-user side:
 * BAR2 traffic of every size and offset, IRQ enable/clear/status reads racing
 * host input changes, INTx eventfds masked, unmasked, triggered and replaced,
 * the Command register's INTx disable, config writes, DEVICE_RESET.
 *
 * Even seeds serve BAR2 as I/O space (the real card's 8 bytes), odd seeds as
 * 256 bytes of memory. The liveness probe resets the card and checks a
 * known output and input round trip and one change-of-state interrupt.
 */
import { VfioUserClient } from '../../client/index.js';
import {
  createGpioDevice,
  GpioControlClient,
  startGpioControl,
  IrqStatus,
  type GpioControlServer,
  type Idio16,
} from '../../devices/gpio/index.js';
import { IrqSetFlag, PciIrq, PciRegion } from '../../protocol/constants.js';
import { serve, type DeviceServer } from '../../server/server.js';
import { testLogger } from '../helpers/harness.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { Rng } from './rng.js';
import { FuzzFailure, tolerate, type FuzzSession, type FuzzTarget, type SessionOptions } from './target.js';

const BAR = 2;

export type GpioAction =
  | { k: 'write'; offset: number; size: number; value: number; posted: boolean }
  | { k: 'read'; offset: number; size: number }
  /** The host drives one input line or all of them (sometimes out of range: the control socket refuses). */
  | { k: 'input'; line: number; value: number }
  | { k: 'inputs'; mask: number }
  /** Read 0x2 (enable the IRQ), write 0x2 (disable), write 0x1 (clear), read 0x6 (status). */
  | { k: 'irqReg'; op: 'enable' | 'disable' | 'clear' | 'status' }
  /** A host input change and guest IRQ register accesses in flight at once, in a drawn order. */
  | { k: 'race'; mask: number; ops: Array<'enable' | 'disable' | 'clear' | 'status' | 'input'> }
  | { k: 'irqs'; index: number; op: 'enable' | 'disable' | 'mask' | 'unmask' | 'trigger'; start: number; count: number }
  | { k: 'command'; value: number }
  | { k: 'cfgWrite'; offset: number; size: number; value: number }
  | { k: 'reset' }
  | { k: 'wait'; ms: number };

function offset(rng: Rng, size: number): number {
  return rng.weighted([
    [70, () => rng.int(8)],
    [15, () => rng.int(0x100)],
    [10, () => rng.pick([8 - size, 7, 8, 0xfe, 0xff, 0x100])],
    [5, () => rng.pick([0x1000, 0xffffffff, 2 ** 40])],
  ] as const)();
}

/** One action drawn from `rng`. */
function nextGpioAction(rng: Rng): GpioAction {
  const kind = rng.weighted([
    [25, 'write'],
    [15, 'read'],
    [8, 'input'],
    [6, 'inputs'],
    [15, 'irqReg'],
    [10, 'race'],
    [6, 'irqs'],
    [3, 'command'],
    [1, 'cfgWrite'],
    [1, 'reset'],
    [5, 'wait'],
  ] as const);
  const op = () => rng.pick(['enable', 'disable', 'clear', 'status'] as const);
  switch (kind) {
    case 'write': {
      const size = rng.pick([1, 1, 1, 2, 4, 8]);
      return {
        k: 'write',
        offset: offset(rng, size),
        size,
        value: rng.chance(0.5) ? rng.int(256) : rng.u32(),
        posted: rng.chance(0.3),
      };
    }
    case 'read': {
      const size = rng.pick([1, 1, 1, 2, 4, 8]);
      return { k: 'read', offset: offset(rng, size), size };
    }
    case 'input':
      return { k: 'input', line: rng.chance(0.95) ? rng.int(16) : rng.pick([16, -1, 0.5, 2 ** 31]), value: rng.int(2) };
    case 'inputs':
      return { k: 'inputs', mask: rng.chance(0.95) ? rng.int(0x10000) : rng.pick([0x10000, -1, 2 ** 32]) };
    case 'irqReg':
      return { k: 'irqReg', op: op() };
    case 'race': {
      const ops = Array.from({ length: rng.range(2, 5) }, () => (rng.chance(0.3) ? ('input' as const) : op()));
      return { k: 'race', mask: rng.int(0x10000), ops };
    }
    case 'irqs':
      return {
        k: 'irqs',
        index: rng.weighted([
          [80, PciIrq.INTX],
          [10, PciIrq.MSI],
          [5, PciIrq.MSIX],
          [5, PciIrq.REQ],
        ] as const),
        op: rng.pick(['enable', 'disable', 'mask', 'unmask', 'unmask', 'trigger'] as const),
        start: rng.chance(0.9) ? 0 : rng.int(3),
        count: rng.chance(0.9) ? 1 : rng.pick([0, 2]),
      };
    case 'command':
      return {
        k: 'command',
        value: rng.weighted([
          [50, 0x3],
          [30, 0x403],
          [10, 0],
          [10, rng.int(0x10000)],
        ] as const),
      };
    case 'cfgWrite': {
      const size = rng.pick([1, 2, 4]);
      let at = rng.int(0x100 / size) * size;
      if (at >= 0x10 && at < 0x28) at += 0x20; // not the BARs' addresses: the client's business
      return { k: 'cfgWrite', offset: at, size, value: rng.u32() };
    }
    case 'reset':
      return { k: 'reset' };
    case 'wait':
      return {
        k: 'wait',
        ms: rng.weighted([
          [8, 0],
          [2, 1],
        ] as const),
      };
  }
}

const le = (value: number, size: number): Uint8Array => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value >>> 0), true);
  return b.subarray(0, size);
};

const sleep = (ms: number) => new Promise<void>((r) => (ms === 0 ? setImmediate(r) : setTimeout(r, ms)));

class GpioSession implements FuzzSession<GpioAction> {
  deathReason: string | undefined;
  readonly stats = { interrupts: 0, controlRefusals: 0 };
  private closing = false;
  private probes = 0;

  private constructor(
    private readonly gpio: Idio16,
    private readonly server: DeviceServer,
    private readonly control: GpioControlServer,
    private readonly host: GpioControlClient,
    private readonly client: VfioUserClient,
    private readonly dir: TempDir,
    private readonly hangMs: number,
  ) {
    void client.closed.then((reason) => {
      if (!this.closing) this.deathReason = reason;
    });
  }

  static async start(options: SessionOptions): Promise<GpioSession> {
    const dir = tempDir('gpio-fuzz-');
    const log = testLogger();
    const { device, gpio } = createGpioDevice({
      name: 'gpio-fuzz',
      barType: options.seed % 2 === 0 ? 'io' : 'mem32',
      log,
    });
    const server = await serve(device, { socketPath: dir.file('gpio.sock'), log });
    const control = await startGpioControl(gpio, dir.file('gpio.control'), { log });
    const host = await GpioControlClient.connect(dir.file('gpio.control'));
    const client = await VfioUserClient.connect(dir.file('gpio.sock'), { timeoutMs: options.hangMs, log });
    return new GpioSession(gpio, server, control, host, client, dir, options.hangMs);
  }

  /** A host request on the control socket; a refusal (a bad line or mask) is the answer it deserves. */
  private async hostSet(request: { line: number; value: number } | { inputs: number }): Promise<void> {
    try {
      await this.host.request({ op: 'set', ...request });
    } catch (err) {
      if (!(err as Error).message.startsWith('gpio control:'))
        throw new FuzzFailure('death', `control socket: ${(err as Error).message}`);
      this.stats.controlRefusals++;
    }
  }

  private irqReg(op: 'enable' | 'disable' | 'clear' | 'status'): Promise<void> {
    const c = this.client;
    switch (op) {
      case 'enable':
        return tolerate(c.regionRead(BAR, 2, 1));
      case 'disable':
        return tolerate(c.regionWrite(BAR, 2, le(0, 1)));
      case 'clear':
        return tolerate(c.regionWrite(BAR, 1, le(0, 1)));
      case 'status':
        return tolerate(c.regionRead(BAR, 6, 1));
    }
  }

  async execute(a: GpioAction): Promise<void> {
    const c = this.client;
    switch (a.k) {
      case 'write':
        return tolerate(c.regionWrite(BAR, a.offset, le(a.value, a.size), { posted: a.posted }));
      case 'read':
        return tolerate(c.regionRead(BAR, a.offset, a.size));
      case 'input':
        return this.hostSet({ line: a.line, value: a.value });
      case 'inputs':
        return this.hostSet({ inputs: a.mask });
      case 'irqReg':
        return this.irqReg(a.op);
      case 'race':
        await Promise.all(a.ops.map((op) => (op === 'input' ? this.hostSet({ inputs: a.mask }) : this.irqReg(op))));
        return;
      case 'irqs':
        if (a.op === 'enable') return tolerate(c.enableIrqs(a.index, a.count, a.start));
        if (a.op === 'disable') return tolerate(c.disableIrqs(a.index));
        return tolerate(
          c.setIrqs({
            flags:
              IrqSetFlag.DATA_NONE |
              { mask: IrqSetFlag.ACTION_MASK, unmask: IrqSetFlag.ACTION_UNMASK, trigger: IrqSetFlag.ACTION_TRIGGER }[
                a.op
              ],
            index: a.index,
            start: a.start,
            count: a.count,
          }),
        );
      case 'command':
        return tolerate(c.cfgWrite16(0x04, a.value));
      case 'cfgWrite':
        return tolerate(c.regionWrite(PciRegion.CONFIG, a.offset, le(a.value, a.size)));
      case 'reset':
        return tolerate(c.reset());
      case 'wait':
        return sleep(a.ms);
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
        throw new FuzzFailure(e.errno === 110 ? 'hang' : 'probe', `probe: ${what}: ${e.message}`);
      }
    };
    const byte = async (at: number) => (await step(`read 0x${at.toString(16)}`, c.regionRead(BAR, at, 1)))[0]!;
    const expect = (what: string, got: number, want: number) => {
      if (got !== want)
        throw new FuzzFailure('probe', `probe: ${what} is 0x${got.toString(16)}, wanted 0x${want.toString(16)}`);
    };
    this.probes++;
    await step('DEVICE_RESET', c.reset());
    for (const index of [PciIrq.MSI, PciIrq.MSIX, PciIrq.REQ]) await tolerate(c.disableIrqs(index));
    await step('PCI command', c.cfgWrite16(0x04, 0x0003));
    await step('INTx eventfd', c.enableIrqs(PciIrq.INTX, 1));
    // Outputs: a known pattern written byte by byte reads back, and the host sees it.
    const out = (this.probes * 0x9e37) & 0xffff;
    await step('write OUT0-7', c.regionWrite(BAR, 0, le(out & 0xff, 1)));
    await step('write OUT8-15', c.regionWrite(BAR, 4, le(out >>> 8, 1)));
    expect('OUT0-7', await byte(0), out & 0xff);
    expect('OUT8-15', await byte(4), out >>> 8);
    expect("the host's outputs", this.gpio.getOutputs(), out);
    // Inputs: what the host drives is what the guest reads.
    const inp = (this.probes * 0x7f4a) & 0xffff;
    await step('host inputs', this.host.request({ op: 'set', inputs: inp }));
    expect('IN0-7', await byte(1), inp & 0xff);
    expect('IN8-15', await byte(5), inp >>> 8);
    // One change-of-state interrupt: enable, clear, unmask INTx, flip IIN0, wait for the eventfd.
    await byte(2);
    await step('clear', c.regionWrite(BAR, 1, le(0, 1)));
    expect('interrupt status after clear', await byte(6), 0);
    await step(
      'INTx unmask',
      c.setIrqs({ flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, index: PciIrq.INTX, start: 0, count: 1 }),
    );
    await step('host input', this.host.request({ op: 'set', inputs: inp ^ 1 }));
    await step('INTx', c.waitForIrq(PciIrq.INTX, 0, this.hangMs));
    this.stats.interrupts++;
    expect('interrupt status', await byte(6), IrqStatus.PENDING | IrqStatus.GROUP0_7);
    await step('clear', c.regionWrite(BAR, 1, le(0, 1)));
    expect('interrupt status after clear', await byte(6), 0);
  }

  async close(): Promise<void> {
    this.closing = true;
    this.client.close();
    this.host.close();
    await this.server.close();
    await this.control.close();
    this.dir.remove();
  }
}

export const gpioTarget: FuzzTarget<GpioAction> = {
  name: 'gpio',
  *actions(seed: number) {
    const rng = new Rng(seed);
    for (;;) yield nextGpioAction(rng);
  },
  start: (options) => GpioSession.start(options),
};
