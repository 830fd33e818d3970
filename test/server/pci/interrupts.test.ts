/**
 * dev.irq through SET_IRQS with real eventfds: the sequences QEMU 11.1 sends
 * (MSI-X enable with no vectors then per-vector fds, INTx with automask and
 * UNMASK/resample, disables), fd ownership (replaced fds closed, nothing leaks).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { native } from '../../../native/index.js';
import { PciDevice } from '../../../server/pci/index.js';
import { IrqInfoFlag, IrqSetFlag, PciIrq } from '../../../protocol/constants.js';
import { listOpenFds } from '../../helpers/fds.js';
import { cfgRead, cfgWrite } from './helpers.js';

const id = { vendor: 0x1b36, device: 0x0011, classCode: 0xff0000 };
const TRIGGER_FD = IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER;
const DISABLE = IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER;
const MASK = IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK;
const UNMASK = IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK;
const UNMASK_FD = IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_UNMASK;

let baseline: number[];
let dev: PciDevice;
/** Our ends of the eventfds (the device gets dups, as over SCM_RIGHTS). */
const mine: number[] = [];

function eventfdPair(): { ours: number; theirs: number } {
  const ours = native.eventfd();
  mine.push(ours);
  return { ours, theirs: native.dupFd(ours) };
}

beforeEach(() => {
  baseline = listOpenFds();
  dev = new PciDevice({
    name: 'irq',
    id,
    bars: [{ index: 0, size: 0x1000 }],
    interrupts: { intx: true, msi: { vectors: 4 }, msix: { vectors: 8, bar: 0 }, req: true },
  });
  // Memory decoding and bus mastering on, as a guest driver sets them: MSI and MSI-X are memory
  // writes, dropped while bus mastering is off (bus-master.test.ts).
  void dev.regionWrite(7, 0x04n, new Uint8Array([0x06, 0x00]));
});

afterEach(() => {
  dev.close();
  for (const fd of mine.splice(0)) native.closeFd(fd);
  expect(listOpenFds()).toEqual(baseline);
});

describe('IRQ info', () => {
  it('reports counts and the kernel VFIO flags', () => {
    expect(dev.irqInfo(PciIrq.INTX)).toEqual({
      count: 1,
      flags: IrqInfoFlag.EVENTFD | IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED,
    });
    expect(dev.irqInfo(PciIrq.MSI)).toEqual({ count: 4, flags: IrqInfoFlag.EVENTFD | IrqInfoFlag.NORESIZE });
    expect(dev.irqInfo(PciIrq.MSIX)).toEqual({ count: 8, flags: IrqInfoFlag.EVENTFD });
    expect(dev.irqInfo(PciIrq.ERR).count).toBe(1);
    expect(dev.irqInfo(PciIrq.REQ).count).toBe(1);
    expect(() => dev.irqInfo(5)).toThrow();
  });
});

describe('MSI-X as QEMU drives it', () => {
  it('enable with no vectors, then one SET_IRQS per vector; pending vectors fire on install', () => {
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.MSIX, start: 0, count: 1 }, []);
    expect(dev.irq.mode).toBe('msix');
    expect(dev.irq.trigger(3)).toBe(false); // no eventfd yet: pends
    expect(dev.irq.isPending(PciIrq.MSIX, 3)).toBe(true);
    const v3 = eventfdPair();
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.MSIX, start: 3, count: 1 }, [v3.theirs]);
    expect(native.eventfdRead(v3.ours)).toBe(1);
    expect(dev.irq.isPending(PciIrq.MSIX, 3)).toBe(false);
    expect(dev.irq.trigger(3)).toBe(true);
    expect(dev.irq.trigger(3)).toBe(true);
    expect(native.eventfdRead(v3.ours)).toBe(2);
  });

  it('replaces a vector eventfd at any time and closes the old one', () => {
    const a = eventfdPair();
    const b = eventfdPair();
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.MSIX, start: 0, count: 1 }, [a.theirs]);
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.MSIX, start: 0, count: 1 }, [b.theirs]);
    expect(listOpenFds()).not.toContain(a.theirs);
    dev.irq.trigger(0);
    expect(native.eventfdRead(a.ours)).toBe(0);
    expect(native.eventfdRead(b.ours)).toBe(1);
    // De-assign (EVENTFD with 0 fds) then disable the index.
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.MSIX, start: 0, count: 1 }, []);
    expect(listOpenFds()).not.toContain(b.theirs);
    dev.setIrqs({ flags: DISABLE, index: PciIrq.MSIX, start: 0, count: 0 }, []);
    expect(dev.irq.mode).toBe('none');
  });

  it('MSI-X wins over MSI and INTx', () => {
    const intx = eventfdPair();
    const msi = eventfdPair();
    const msix = eventfdPair();
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.INTX, start: 0, count: 1 }, [intx.theirs]);
    expect(dev.irq.mode).toBe('intx');
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.MSI, start: 0, count: 1 }, [msi.theirs]);
    expect(dev.irq.mode).toBe('msi');
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.MSIX, start: 0, count: 1 }, [msix.theirs]);
    dev.irq.trigger(0);
    expect([native.eventfdRead(intx.ours), native.eventfdRead(msi.ours), native.eventfdRead(msix.ours)]).toEqual([
      0, 0, 1,
    ]);
    expect(() => dev.irq.trigger(8)).toThrow(RangeError);
  });

  it('a batch install takes ownership of every fd, and a request the model refuses closes them', () => {
    const fds = [eventfdPair(), eventfdPair(), eventfdPair()];
    dev.setIrqs(
      { flags: TRIGGER_FD, index: PciIrq.MSIX, start: 5, count: 3 },
      fds.map((f) => f.theirs),
    );
    dev.irq.trigger(7);
    expect(native.eventfdRead(fds[2]!.ours)).toBe(1);
    // (Malformed requests never get here: the connection answers them EINVAL, test/protocol/irqs.test.ts.)
    const stray = eventfdPair();
    const maskByFd = IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_MASK;
    expect(() => dev.setIrqs({ flags: maskByFd, index: PciIrq.MSIX, start: 7, count: 1 }, [stray.theirs])).toThrow(
      /MASK with an eventfd/,
    );
    expect(listOpenFds()).not.toContain(stray.theirs);
    const stray2 = eventfdPair();
    const resample = IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_UNMASK;
    expect(() => dev.setIrqs({ flags: resample, index: PciIrq.MSI, start: 0, count: 1 }, [stray2.theirs])).toThrow(
      /UNMASK eventfd only for INTx/,
    );
    expect(listOpenFds()).not.toContain(stray2.theirs);
  });

  it('SET_IRQS MASK pends a vector and UNMASK delivers it', () => {
    const v = eventfdPair();
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.MSIX, start: 2, count: 1 }, [v.theirs]);
    dev.setIrqs({ flags: MASK, index: PciIrq.MSIX, start: 2, count: 1 }, []);
    expect(dev.irq.trigger(2)).toBe(false);
    expect(native.eventfdRead(v.ours)).toBe(0);
    dev.setIrqs({ flags: UNMASK, index: PciIrq.MSIX, start: 2, count: 1 }, []);
    expect(native.eventfdRead(v.ours)).toBe(1);
  });

  it('loopback trigger with DATA_NONE and DATA_BOOL', () => {
    const fds = [eventfdPair(), eventfdPair()];
    dev.setIrqs(
      { flags: TRIGGER_FD, index: PciIrq.MSI, start: 0, count: 2 },
      fds.map((f) => f.theirs),
    );
    dev.setIrqs({ flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, index: PciIrq.MSI, start: 0, count: 2 }, []);
    dev.setIrqs(
      {
        flags: IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER,
        index: PciIrq.MSI,
        start: 0,
        count: 2,
        bools: new Uint8Array([0, 1]),
      },
      [],
    );
    expect(fds.map((f) => native.eventfdRead(f.ours))).toEqual([1, 2]);
  });
});

describe('INTx', () => {
  it('is automasked until UNMASK, pends meanwhile, and sets Status.INTERRUPT', async () => {
    const e = eventfdPair();
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.INTX, start: 0, count: 1 }, [e.theirs]);
    expect(dev.irq.trigger()).toBe(true);
    expect((await cfgRead(dev, 0x06, 2)) & 0x8).toBe(0x8);
    expect(dev.irq.trigger()).toBe(false);
    expect(native.eventfdRead(e.ours)).toBe(1);
    dev.setIrqs({ flags: UNMASK, index: PciIrq.INTX, start: 0, count: 1 }, []);
    expect(native.eventfdRead(e.ours)).toBe(1); // the pending one
    dev.setIrqs({ flags: UNMASK, index: PciIrq.INTX, start: 0, count: 1 }, []);
    expect((await cfgRead(dev, 0x06, 2)) & 0x8).toBe(0);
  });

  it('an explicit MASK without an interrupt does not assert Status.INTERRUPT', async () => {
    const e = eventfdPair();
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.INTX, start: 0, count: 1 }, [e.theirs]);
    dev.setIrqs({ flags: MASK, index: PciIrq.INTX, start: 0, count: 1 }, []);
    expect((await cfgRead(dev, 0x06, 2)) & 0x8).toBe(0);
    expect(dev.irq.trigger()).toBe(false);
    expect((await cfgRead(dev, 0x06, 2)) & 0x8).toBe(0x8);
  });

  it('COMMAND.INTX_DISABLE holds the interrupt until cleared', async () => {
    const e = eventfdPair();
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.INTX, start: 0, count: 1 }, [e.theirs]);
    await cfgWrite(dev, 0x04, 2, 0x400);
    expect(dev.irq.trigger()).toBe(false);
    expect(native.eventfdRead(e.ours)).toBe(0);
    await cfgWrite(dev, 0x04, 2, 0);
    expect(native.eventfdRead(e.ours)).toBe(1);
  });

  it('unmasks when the client signals the resample eventfd (KVM path)', async () => {
    const trig = eventfdPair();
    const resample = eventfdPair();
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.INTX, start: 0, count: 1 }, [trig.theirs]);
    dev.setIrqs({ flags: MASK, index: PciIrq.INTX, start: 0, count: 1 }, []);
    dev.setIrqs({ flags: UNMASK_FD, index: PciIrq.INTX, start: 0, count: 1 }, [resample.theirs]);
    dev.setIrqs({ flags: UNMASK, index: PciIrq.INTX, start: 0, count: 1 }, []);
    expect(dev.irq.trigger()).toBe(true);
    expect(dev.irq.trigger()).toBe(false);
    native.eventfdWrite(resample.ours); // guest EOI
    while (dev.irq.isPending(PciIrq.INTX, 0)) await new Promise((r) => setTimeout(r, 1));
    expect(native.eventfdRead(trig.ours)).toBe(2);
    // Disabling INTx drops the resample fd too.
    dev.setIrqs({ flags: DISABLE, index: PciIrq.INTX, start: 0, count: 0 }, []);
    expect(listOpenFds()).not.toContain(resample.theirs);
  });
});

describe('handing eventfds to a reloaded device (exchangeClientResources)', () => {
  it('the new device signals the trigger fd and follows the resample fd; the old one has neither', async () => {
    const next = new PciDevice({
      name: 'irq',
      id,
      bars: [{ index: 0, size: 0x1000 }],
      interrupts: { intx: true, msi: { vectors: 4 }, msix: { vectors: 8, bar: 0 }, req: true },
    });
    try {
      const trig = eventfdPair();
      const resample = eventfdPair();
      dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.INTX, start: 0, count: 1 }, [trig.theirs]);
      dev.setIrqs({ flags: UNMASK_FD, index: PciIrq.INTX, start: 0, count: 1 }, [resample.theirs]);
      await dev.quiesce();
      await next.quiesce();
      await next.loadState(await dev.saveState());
      dev.exchangeClientResources(next);
      await next.resume();
      expect(dev.irq.hasEventfd(PciIrq.INTX, 0)).toBe(false);
      expect(next.irq.hasEventfd(PciIrq.INTX, 0)).toBe(true);
      expect(next.irq.trigger()).toBe(true); // delivered and automasked
      expect(next.irq.trigger()).toBe(false);
      native.eventfdWrite(resample.ours); // guest EOI, seen by the new device
      while (next.irq.isPending(PciIrq.INTX, 0)) await new Promise((r) => setTimeout(r, 1));
      expect(native.eventfdRead(trig.ours)).toBe(2);
    } finally {
      next.close();
    }
    expect(listOpenFds().length).toBe(baseline.length + mine.length); // the client's dups went with `next`
  });
});

describe('reset', () => {
  it('DEVICE_RESET keeps eventfds (libvfio-user parity) and forgets pending state', async () => {
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.MSIX, start: 0, count: 1 }, []);
    dev.irq.trigger(1);
    expect(dev.irq.isPending(PciIrq.MSIX, 1)).toBe(true);
    const v0 = eventfdPair();
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.MSIX, start: 0, count: 1 }, [v0.theirs]);
    await dev.reset('client');
    expect(dev.irq.isPending(PciIrq.MSIX, 1)).toBe(false);
    void dev.regionWrite(7, 0x04n, new Uint8Array([0x06, 0x00])); // the reset cleared bus mastering
    expect(dev.irq.trigger(0)).toBe(true);
    expect(native.eventfdRead(v0.ours)).toBe(1);
  });
});

describe('hostile fds', () => {
  it('drops a resample fd that polls readable without being an eventfd (no busy loop)', async () => {
    const [a, b] = native.socketpair();
    native.closeFd(b); // a now reads EOF forever: always readable
    dev.setIrqs({ flags: UNMASK_FD, index: PciIrq.INTX, start: 0, count: 1 }, [a]);
    while (listOpenFds().includes(a)) await new Promise((r) => setTimeout(r, 1));
    expect(listOpenFds()).not.toContain(a);
  });
});

describe('ERR and REQ', () => {
  it('signal their single vector and close fds on detach', async () => {
    const err = eventfdPair();
    const req = eventfdPair();
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.ERR, start: 0, count: 1 }, [err.theirs]);
    dev.setIrqs({ flags: TRIGGER_FD, index: PciIrq.REQ, start: 0, count: 1 }, [req.theirs]);
    expect(dev.irq.triggerErr()).toBe(true);
    expect(dev.irq.triggerReq()).toBe(true);
    expect(native.eventfdRead(err.ours)).toBe(1);
    expect(native.eventfdRead(req.ours)).toBe(1);
    await dev.detach();
    expect(listOpenFds()).not.toContain(err.theirs);
    expect(listOpenFds()).not.toContain(req.theirs);
  });
});
