/**
 * The PCI-IDIO-16 against the hostile-guest fuzzer (npm run fuzz -- --target
 * gpio): 20,000 seeded actions with BAR2 in I/O space and 20,000 with it in
 * memory space, a probe (output and input round trips, one change-of-state
 * interrupt) every 250, no death, hang or probe failure, fds back.
 */
import { describe, expect, it } from 'vitest';
import { fdBaseline } from '../helpers/fds.js';
import { gpioTarget } from './gpio-target.js';
import { runGuestFuzz } from './runner.js';

const ACTIONS = 20_000;

describe('GPIO hostile-guest fuzz', () => {
  // Even seeds serve BAR2 as I/O space, odd ones as memory.
  it.each([
    ['I/O', 0x13f0],
    ['memory', 0x13f1],
  ])(`survives ${ACTIONS} actions with BAR2 in %s space (seed %i)`, { timeout: 120_000 }, async (_, seed) => {
    const fds = fdBaseline();
    const r = await runGuestFuzz(gpioTarget, { seed, count: ACTIONS });
    expect(r.failure).toBeUndefined();
    expect({ deaths: r.deaths, hangs: r.hangs, probeFailures: r.probeFailures }).toEqual({
      deaths: 0,
      hangs: 0,
      probeFailures: 0,
    });
    expect(r.actions).toBe(ACTIONS);
    expect(r.probes).toBe(ACTIONS / 250 + 1);
    expect(r.stats.interrupts).toBe(r.probes);
    expect(r.fds.end).toBe(r.fds.start);
    await fds.settle();
  });
});
