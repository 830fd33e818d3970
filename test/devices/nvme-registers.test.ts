/**
 * The NVMe register file and CC/CSTS state machine (devices/nvme/registers.ts)
 * on their own: CAP/VS, byte and word access, the admin queue registers,
 * and what an enable, a reset and a shutdown ask of the rest of the
 * controller, in order, and that they end within their bound whatever the
 * commands in flight do. The rest of the controller is a ControllerLifecycle
 * that records the calls and lets the test decide when the commands in
 * flight are done.
 */
import { describe, expect, it } from 'vitest';
import { CqInterrupts } from '../../devices/nvme/cq-interrupts.js';
import { defaultFeatures } from '../../devices/nvme/features.js';
import type { NvmeHost } from '../../devices/nvme/host.js';
import { ControllerRegisters, type ControllerLifecycle } from '../../devices/nvme/registers.js';
import { LogLimiter } from '../../server/log-limiter.js';
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
/** The reset/shutdown bound the tests give the registers (ms). */
const DRAIN_MS = 50;

/** A turn of the event loop: state changes chained on promises get to run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function registers() {
  const calls: string[] = [];
  let holdQuiesce = false;
  let releases: (() => void)[] = [];
  const lifecycle: ControllerLifecycle = {
    createAdminQueues: (asq, asqs, acq, acqs) =>
      void calls.push(`admin queues SQ 0x${asq.toString(16)}/${asqs} CQ 0x${acq.toString(16)}/${acqs}`),
    beginReset: (full) => void calls.push(full ? 'begin reset (full)' : 'begin reset'),
    quiesce: () => {
      calls.push('quiesce');
      if (!holdQuiesce) return Promise.resolve();
      return new Promise<void>((resolve) => releases.push(resolve));
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
  const regs = new ControllerRegisters(
    lifecycle,
    new CqInterrupts(host, defaultFeatures, new LogLimiter(silentLogger)),
    new LogLimiter(silentLogger),
    DRAIN_MS,
  );
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
    /** The commands in flight are done: every quiesce() waiting resolves. */
    release: () => {
      calls.push('idle');
      for (const r of releases) r();
      releases = [];
    },
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

  it('resets on CC.EN 1 -> 0: drops everything at once, keeps RDY until commands in flight are done, flushes after', async () => {
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
    expect(calls).toEqual(['begin reset', 'quiesce', 'idle', 'end reset', 'flush']);
    expect(read(CSTS)).toBe(0);
    expect(read(AQA)).toBe((63 << 16) | 63); // a controller reset keeps the admin queue registers
  });

  it('ends a reset whose commands never finish after its bound, with Controller Fatal Status', async () => {
    const { regs, calls, read, write, program, hold } = registers();
    program();
    write(CC, CC_ENABLE);
    await settle();
    calls.length = 0;
    hold(true);
    const t0 = Date.now();
    write(CC, CC_ENABLE & ~1);
    while (read(CSTS) & 1) await new Promise((r) => setTimeout(r, 5));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(DRAIN_MS - 5);
    expect(Date.now() - t0).toBeLessThan(DRAIN_MS + 500);
    expect(read(CSTS)).toBe(2); // RDY clear, CFS set
    expect(calls).toEqual(['begin reset', 'quiesce', 'end reset', 'flush']);
    hold(false);
    write(CC, CC_ENABLE); // the next enable clears CFS
    expect(read(CSTS)).toBe(1);
    expect(regs.enabled).toBe(true);
  });

  it('enables after a reset that was running when CC.EN came back, and never queues resets up', async () => {
    const { regs, calls, read, write, program, hold, release } = registers();
    program();
    write(CC, CC_ENABLE);
    await settle();
    calls.length = 0;
    hold(true);
    for (let i = 0; i < 100; i++) {
      write(CC, CC_ENABLE & ~1);
      write(CC, CC_ENABLE); // waits for the reset
    }
    expect(regs.enabled).toBe(false);
    release();
    await settle();
    expect(calls.filter((c) => c === 'end reset')).toEqual(['end reset']); // only the newest reset ends
    expect(calls.filter((c) => c.startsWith('admin queues'))).toHaveLength(1);
    expect(read(CSTS)).toBe(1);
  });

  it('shuts down after commands in flight and a flush; a PCI reset meanwhile starts at once and clears the registers', async () => {
    const { regs, calls, read, write, program, hold, release } = registers();
    program();
    write(CC, CC_ENABLE);
    await settle();
    calls.length = 0;
    hold(true);
    write(CC, CC_ENABLE | SHN_NORMAL);
    expect(read(CSTS) & SHST_MASK).toBe(1 << 2); // shutdown processing
    await settle();
    expect(calls).toEqual(['quiesce']);
    const reset = regs.reset();
    await settle();
    expect(calls).toEqual(['quiesce', 'begin reset (full)', 'quiesce']); // the reset did not wait for the shutdown
    release();
    await reset;
    await settle();
    expect(calls).toEqual(['quiesce', 'begin reset (full)', 'quiesce', 'idle', 'flush', 'end reset', 'flush']);
    expect([read(CC), read(CSTS), read(AQA), regs.asq, regs.acq]).toEqual([0, 0, 0, 0n, 0n]); // no SHST left over
  });

  it('reports a shutdown complete after its commands and the flush; with Controller Fatal Status when they outlast the bound', async () => {
    const ok = registers();
    ok.program();
    ok.write(CC, CC_ENABLE);
    await settle();
    ok.write(CC, CC_ENABLE | SHN_NORMAL);
    await settle();
    expect(ok.read(CSTS)).toBe(1 | (2 << 2)); // RDY, SHST complete
    const stuck = registers();
    stuck.program();
    stuck.write(CC, CC_ENABLE);
    await settle();
    stuck.hold(true);
    const t0 = Date.now();
    stuck.write(CC, CC_ENABLE | SHN_NORMAL);
    while ((stuck.read(CSTS) & SHST_MASK) !== 2 << 2) await new Promise((r) => setTimeout(r, 5));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(DRAIN_MS - 5);
    expect(stuck.read(CSTS)).toBe(1 | 2 | (2 << 2)); // RDY, CFS, SHST complete
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
