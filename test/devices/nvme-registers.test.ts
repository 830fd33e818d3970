/**
 * The NVMe register file and CC/CSTS state machine (devices/nvme/registers.ts)
 * on their own: CAP/VS, byte and word access, the admin queue registers,
 * and what an enable, a reset and a shutdown ask of the rest of the
 * controller, in order. The rest of the controller is a ControllerLifecycle
 * that records the calls and lets the test decide when the commands in
 * flight are done.
 */
import { describe, expect, it } from 'vitest';
import { CqInterrupts } from '../../devices/nvme/cq-interrupts.js';
import { defaultFeatures } from '../../devices/nvme/features.js';
import type { NvmeHost } from '../../devices/nvme/host.js';
import { ControllerRegisters, type ControllerLifecycle } from '../../devices/nvme/registers.js';
import { silentLogger } from '../../server/log.js';

const AQA = 0x24;
const ASQ = 0x28;
const ACQ = 0x30;
const CC = 0x14;
const CSTS = 0x1c;
/** CC.EN with 64-byte SQEs and 16-byte CQEs (IOSQES 6, IOCQES 4). */
const CC_ENABLE = (6 << 16) | (4 << 20) | 1;
const SHN_NORMAL = 1 << 14;
const SHST_MASK = 3 << 2;

/** A turn of the event loop: state changes chained on promises get to run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function registers() {
  const calls: string[] = [];
  let holdQuiesce = false;
  let release: (() => void) | undefined;
  const lifecycle: ControllerLifecycle = {
    createAdminQueues: (asq, asqs, acq, acqs) =>
      void calls.push(`admin queues SQ 0x${asq.toString(16)}/${asqs} CQ 0x${acq.toString(16)}/${acqs}`),
    beginReset: (full) => void calls.push(full ? 'begin reset (full)' : 'begin reset'),
    quiesce: () => {
      calls.push('quiesce');
      if (!holdQuiesce) return Promise.resolve();
      return new Promise<void>((resolve) => {
        release = () => {
          calls.push('idle');
          resolve();
        };
      });
    },
    flush: async () => void calls.push('flush'),
    endReset: () => void calls.push('end reset'),
  };
  const host: NvmeHost = {
    dma: {
      view: () => undefined,
      read: () => Promise.reject(new Error('no memory')),
      write: () => Promise.reject(new Error('no memory')),
    },
    msixEnabled: () => false,
    interrupt: () => {},
  };
  const regs = new ControllerRegisters(lifecycle, new CqInterrupts(host, defaultFeatures, silentLogger), silentLogger);
  const read = (offset: number): number => regs.read(offset, 4);
  const write = (offset: number, value: number): void => regs.write(offset, 4, value);
  /** Program 64-entry admin queues at 0x1_0000_0000 (SQ) and 0x1_0000_1000 (CQ). */
  const program = (): void => {
    write(AQA, (63 << 16) | 63);
    write(ASQ, 0);
    write(ASQ + 4, 1);
    write(ACQ, 0x1000);
    write(ACQ + 4, 1);
  };
  return {
    regs,
    calls,
    read,
    write,
    program,
    hold: (on: boolean) => (holdQuiesce = on),
    release: () => release!(),
  };
}

describe('NVMe registers', () => {
  it('reads CAP and VS, any byte or word of a register, and merges byte writes into the dword', () => {
    const { regs, read } = registers();
    expect(read(0x00)).toBe(0x0f0103ff); // MQES 1023, CQR, TO 15 (7.5 s)
    expect(read(0x04)).toBe(1 << 5); // CSS: NVM command set
    expect(read(0x08)).toBe(0x00010400); // 1.4.0
    expect(regs.read(0x01, 1)).toBe(0x03);
    expect(regs.read(0x02, 2)).toBe(0x0f01);
    regs.write(AQA, 1, 0x3f);
    regs.write(AQA + 2, 2, 0x1f);
    expect(read(AQA)).toBe(0x001f003f);
    regs.write(0x00, 4, 0); // CAP is read-only
    expect(read(0x00)).toBe(0x0f0103ff);
    expect(read(0x1000)).toBe(0); // doorbells read as 0
  });

  it('keeps ASQ/ACQ page aligned and the admin queue registers read-only while enabled', async () => {
    const { regs, read, write, program } = registers();
    write(ASQ, 0x12345fff);
    write(ASQ + 4, 2);
    expect(regs.asq).toBe(0x2_12345000n);
    program();
    write(CC, CC_ENABLE);
    await settle();
    expect(regs.enabled).toBe(true);
    write(AQA, 0);
    write(ASQ, 0x5000);
    write(ACQ + 4, 7);
    expect([read(AQA), regs.asq, regs.acq]).toEqual([(63 << 16) | 63, 0x1_0000_0000n, 0x1_0000_1000n]);
  });

  it('enables with valid settings (admin queues, RDY) and refuses others with Controller Fatal Status', async () => {
    const good = registers();
    good.program();
    good.write(CC, CC_ENABLE);
    await settle();
    expect(good.calls).toEqual(['admin queues SQ 0x100000000/64 CQ 0x100001000/64']);
    expect(good.read(CSTS)).toBe(1);

    const bad = registers();
    bad.program();
    bad.write(CC, CC_ENABLE | (1 << 7)); // MPS 1: 8 KiB pages
    await settle();
    expect(bad.calls).toEqual([]);
    expect(bad.regs.enabled).toBe(false);
    expect(bad.read(CSTS)).toBe(2); // CFS, not RDY
  });

  it('resets on CC.EN 1 -> 0: drops everything at once, keeps RDY until commands in flight are done and flushed', async () => {
    const { regs, calls, read, write, program, hold, release } = registers();
    program();
    write(CC, CC_ENABLE);
    await settle();
    calls.length = 0;
    hold(true);
    write(CC, CC_ENABLE & ~1);
    await settle();
    expect(calls).toEqual(['begin reset', 'quiesce']);
    expect(regs.enabled).toBe(false); // doorbells no longer count
    expect(read(CSTS) & 1).toBe(1); // but RDY clears only when the reset is done
    release();
    await settle();
    expect(calls).toEqual(['begin reset', 'quiesce', 'idle', 'flush', 'end reset']);
    expect(read(CSTS)).toBe(0);
    expect(read(AQA)).toBe((63 << 16) | 63); // a controller reset keeps the admin queue registers
  });

  it('shuts down after commands in flight and a flush; a PCI reset asked meanwhile waits, then clears the registers', async () => {
    const { regs, calls, read, write, program, hold, release } = registers();
    program();
    write(CC, CC_ENABLE);
    await settle();
    calls.length = 0;
    hold(true);
    write(CC, CC_ENABLE | SHN_NORMAL);
    expect(read(CSTS) & SHST_MASK).toBe(1 << 2); // shutdown processing
    const reset = regs.reset();
    await settle();
    expect(calls).toEqual(['quiesce']); // the reset has not begun
    hold(false);
    release();
    await reset;
    expect(calls).toEqual(['quiesce', 'idle', 'flush', 'begin reset (full)', 'quiesce', 'flush', 'end reset']);
    expect([read(CC), read(CSTS), read(AQA), regs.asq, regs.acq]).toEqual([0, 0, 0, 0n, 0n]);
  });

  it('sets Controller Fatal Status when a part reports a fatal error', () => {
    const { regs, read } = registers();
    regs.fatal('CQ 1 is not in guest memory', new Error('unmapped'));
    expect(read(CSTS) & 2).toBe(2);
  });

  it('reads INTMS/INTMC as the interrupt mask they set and clear', () => {
    const { read, write } = registers();
    write(0x0c, 1);
    expect([read(0x0c), read(0x10)]).toEqual([1, 1]);
    write(0x10, 1);
    expect([read(0x0c), read(0x10)]).toEqual([0, 0]);
  });
});
