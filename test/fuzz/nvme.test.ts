/**
 * The NVMe controller against the hostile-guest fuzzer (npm run fuzz --
 * --target nvme): 20,000 seeded actions with a liveness probe every 250,
 * and the device must come through with no death, hang or probe failure and
 * with the process's fds back where they were.
 */
import { describe, expect, it } from 'vitest';
import { fdBaseline } from '../helpers/fds.js';
import { nvmeTarget } from './nvme-target.js';
import { runGuestFuzz } from './runner.js';

const ACTIONS = 20_000;
// A run takes 3-6 s (memfd) and about 16 s (DMA messages) on an idle 2-core machine; the
// test timeout leaves room for a loaded one.

describe('NVMe hostile-guest fuzz', () => {
  // Even seeds map the guest RAM with its memfd, odd ones without (DMA by messages).
  it.each([
    ['memfd', 0x13f0],
    ['DMA messages', 0x13f1],
  ])(`survives ${ACTIONS} actions with guest RAM by %s (seed %i)`, { timeout: 120_000 }, async (_, seed) => {
    const fds = fdBaseline();
    const r = await runGuestFuzz(nvmeTarget, { seed, count: ACTIONS });
    expect(r.failure).toBeUndefined();
    expect({ deaths: r.deaths, hangs: r.hangs, probeFailures: r.probeFailures }).toEqual({
      deaths: 0,
      hangs: 0,
      probeFailures: 0,
    });
    expect(r.actions).toBe(ACTIONS);
    expect(r.probes).toBe(ACTIONS / 250 + 1);
    // Each probe leaves the same fds open (memory mapped, MSI-X eventfds): none piled up in between.
    expect(r.fds.end).toBe(r.fds.start);
    // The guest got real work done between its hostile acts.
    expect(r.stats.completions).toBeGreaterThan(200);
    expect(r.stats.errors).toBeGreaterThan(200);
    await fds.settle();
  });
});
