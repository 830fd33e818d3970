/**
 * The guest fuzzers find and shrink failures: a hang and a death planted in a
 * small trap device are reported as such (with the index of the action), and
 * the minimiser shrinks a failing list to its minimal core, for the trap and
 * for a failure injected into an NVMe run (each candidate replayed on a fresh
 * device).
 */
import { describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../client/index.js';
import { PciDevice, serve, type DeviceServer } from '../../server/index.js';
import { fdBaseline } from '../helpers/fds.js';
import { testLogger } from '../helpers/harness.js';
import { tempDir } from '../helpers/temp.js';
import { minimiseFailure } from './minimise.js';
import { nvmeTarget } from './nvme-target.js';
import type { NvmeAction } from './nvme-actions.js';
import { Rng } from './rng.js';
import { runGuestFuzz } from './runner.js';
import { tolerate, type FuzzTarget } from './target.js';

/** A write of `value` to byte register `reg` of the trap's BAR0. */
type TrapAction = { k: 'write'; reg: number; value: number };

const ARM = { reg: 1, value: 0xa5 };
const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * A device with a planted bug: once register 1 was written 0xa5 (armed), a
 * write of 0xf1 to register 2 stalls the event loop (a hang) and a write of
 * 0xf2 drops the connection (a death, as a crashed server looks to the guest).
 * Most writes are harmless; the rare ones come up a few times in 2,000.
 */
function trapTarget(hangMs: number): FuzzTarget<TrapAction> {
  return {
    name: 'trap',
    *actions(seed) {
      const rng = new Rng(seed);
      for (;;) {
        const reg = rng.int(4);
        yield { k: 'write', reg, value: rng.chance(0.02) ? rng.pick([0xa5, 0xf1, 0xf2]) : rng.int(0xa0) };
      }
    },
    async start(options) {
      const dir = tempDir('trap-');
      let armed = false;
      let server: DeviceServer | undefined;
      const device = new PciDevice({
        name: 'trap',
        id: { vendor: 0x1b36, device: 0x0005, classCode: 0xff0000 },
        bars: [
          {
            index: 0,
            size: 0x100,
            read: () => 0,
            write: (offset, _size, value) => {
              if (offset === ARM.reg && value === ARM.value) armed = true;
              if (armed && offset === 2 && value === 0xf1) sleepSync(hangMs + 300);
              if (armed && offset === 2 && value === 0xf2) void server?.connection?.close('trap');
            },
          },
        ],
      });
      const log = testLogger();
      server = await serve(device, { socketPath: dir.file('trap.sock'), log });
      const client = await VfioUserClient.connect(dir.file('trap.sock'), { timeoutMs: options.hangMs, log });
      let closing = false;
      const session = {
        deathReason: undefined as string | undefined,
        stats: {},
        execute: (a: TrapAction) => tolerate(client.regionWrite(0, a.reg, Uint8Array.of(a.value))),
        async probe() {
          armed = false;
          await client.regionRead(0, 0, 4);
        },
        async close() {
          closing = true;
          client.close();
          await server.close();
          dir.remove();
        },
      };
      void client.closed.then((reason) => {
        if (!closing) session.deathReason = reason;
      });
      return session;
    },
  };
}

/**
 * The first seed whose trap run fails with `kind`, its report and the minimised repro. A
 * run's "hang" that a replay does not confirm (a stall of a loaded machine, not the planted
 * one) makes the minimiser refuse the list: that seed is passed over.
 */
async function firstMinimised(target: FuzzTarget<TrapAction>, kind: string, hangMs: number) {
  for (let seed = 1; seed < 50; seed++) {
    const r = await runGuestFuzz(target, { seed, count: 2000, hangMs, probeEvery: 500 });
    if (r.failure?.kind !== kind) continue;
    try {
      const repro = await minimiseFailure(target, {
        seed: r.seed,
        candidates: Array.from({ length: r.failure.index + 1 }, (_, i) => i),
        hangMs,
        probeEvery: 500,
      });
      return { r, repro };
    } catch (err) {
      if (!/does not fail/.test((err as Error).message)) throw err;
    }
  }
  throw new Error(`no seed gave a ${kind}`);
}

describe('guest fuzz findings', () => {
  // Well above a loop turn on a loaded machine, so only the planted stall counts as a hang.
  const hangMs = 500;
  const trap = trapTarget(hangMs);

  it.each(['hang', 'death'])(
    'reports a %s with the action it followed, and shrinks it to arm + fire',
    { timeout: 120_000 },
    async (kind) => {
      const fds = fdBaseline();
      const { r, repro } = await firstMinimised(trap, kind, hangMs);
      expect(r.failure!.kind).toBe(kind);
      expect(r.hangs + r.deaths).toBe(1);
      const fire = kind === 'hang' ? 0xf1 : 0xf2;
      expect(repro.kind).toBe(kind);
      expect(repro.indices).toHaveLength(2);
      // A lost connection can show one action late (the reply to the fatal write may still arrive).
      expect(repro.indices[1]).toBeGreaterThanOrEqual(r.failure!.index - (kind === 'death' ? 1 : 0));
      expect(repro.indices[1]).toBeLessThanOrEqual(r.failure!.index);
      expect(repro.actions).toEqual([
        { k: 'write', ...ARM },
        { k: 'write', reg: 2, value: fire },
      ]);
      await fds.settle();
    },
  );

  it('shrinks an NVMe run with an injected failure to its minimal core', { timeout: 120_000 }, async () => {
    const fds = fdBaseline();
    // The injected failure: a DEVICE_RESET, later a Delete of some queue sent at least twice.
    const inject = () => {
      let reset = false;
      return (a: NvmeAction) => {
        if (a.k === 'reset') reset = true;
        return reset && a.k === 'delete' && a.times >= 2 ? 'reset, then a double delete' : undefined;
      };
    };
    let seed = 1;
    let r = await runGuestFuzz(nvmeTarget, { seed, count: 3000, inject });
    while (r.failure?.kind !== 'injected' && seed < 20)
      r = await runGuestFuzz(nvmeTarget, { seed: ++seed, count: 3000, inject });
    expect(r.failure?.kind).toBe('injected');
    expect(r.failure!.index).toBeGreaterThan(10);
    const repro = await minimiseFailure(nvmeTarget, {
      seed,
      candidates: Array.from({ length: r.failure!.index + 1 }, (_, i) => i),
      inject,
    });
    expect(repro.kind).toBe('injected');
    expect(repro.actions.map((a) => a.k)).toEqual(['reset', 'delete']);
    expect(repro.indices[1]).toBe(r.failure!.index);
    // The repro replays as printed, and each of its actions is needed.
    const again = await runGuestFuzz(nvmeTarget, { seed, count: r.failure!.index + 1, only: repro.indices, inject });
    expect(again.failure?.kind).toBe('injected');
    for (const drop of repro.indices) {
      const rest = repro.indices.filter((i) => i !== drop);
      const without = await runGuestFuzz(nvmeTarget, { seed, count: r.failure!.index + 1, only: rest, inject });
      expect(without.failure).toBeUndefined();
    }
    await fds.settle();
  });
});
