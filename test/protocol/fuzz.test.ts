/**
 * Fuzz: >= 20,000 random and mutated messages over many connections (fixed
 * seed), then a fresh client still negotiates and reads config space, the
 * device is detached, and no fd leaked.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PciRegion } from '../../protocol/constants.js';
import { fdBaseline, type FdBaseline } from '../helpers/fds.js';
import { startDevice, type RunningDevice } from '../helpers/harness.js';
import { TEST_VENDOR } from '../helpers/test-device.js';
import { runFuzz } from './fuzzer.js';

const MESSAGES = 20_000;
const SEED = 0x5eed1234;

let fds: FdBaseline;
let run: RunningDevice;

beforeAll(async () => {
  fds = fdBaseline();
  run = await startDevice();
});

afterAll(async () => {
  await run.stop();
  await fds.settle();
});

describe('fuzz', () => {
  it(`survives ${MESSAGES} hostile messages (seed 0x${SEED.toString(16)})`, { timeout: 60_000 }, async () => {
    const stats = await runFuzz({ socketPath: run.socketPath, idle: run.idle, messages: MESSAGES, seed: SEED });
    expect(stats.messages).toBe(MESSAGES);
    expect(stats.connections).toBeGreaterThan(20);
    expect(stats.syncs).toBeGreaterThan(100);
    expect(stats.noReplyAnswered).toBe(0);

    const c = await run.connect();
    expect(await c.cfg16(0)).toBe(TEST_VENDOR);
    expect((await c.regionRead(PciRegion.CONFIG, 0, 256)).byteLength).toBe(256);
    c.close();
    // Everything the fuzz connections brought in (DMA maps, eventfds, memfds) is gone.
    for (let i = 0; i < 500 && run.device.detaches < run.device.attaches; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(run.device.detaches).toBe(run.device.attaches);
    expect(run.device.dmaRanges()).toEqual([]);
    for (let v = 0; v < 4; v++) expect(run.device.hasEventfd(2, v)).toBe(false);
  });
});
