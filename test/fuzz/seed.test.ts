/**
 * A seed names one action list: the same seed gives the same actions (on
 * every run, and to a replay of chosen indices), another seed other ones.
 */
import { describe, expect, it } from 'vitest';
import { gpioTarget } from './gpio-target.js';
import { nvmeTarget } from './nvme-target.js';
import { pickActions } from './runner.js';
import type { Action, FuzzTarget } from './target.js';

function first(target: FuzzTarget<Action>, seed: number, n: number): string[] {
  const it = target.actions(seed);
  return Array.from({ length: n }, () => JSON.stringify(it.next().value));
}

describe.each([
  ['nvme', nvmeTarget as unknown as FuzzTarget<Action>],
  ['gpio', gpioTarget as unknown as FuzzTarget<Action>],
])('%s actions', (_, target) => {
  it('are the same for the same seed, and differ for another', () => {
    const a = first(target, 42, 5000);
    expect(first(target, 42, 5000)).toEqual(a);
    const b = first(target, 43, 5000);
    expect(b).not.toEqual(a);
    // Every kind of action comes up in 5,000.
    expect(new Set(a.map((s) => (JSON.parse(s) as Action).k)).size).toBeGreaterThan(10);
  });

  it('can be picked by index (what a repro replays)', () => {
    const all = first(target, 7, 300);
    const picked = pickActions(target, 7, [0, 5, 6, 299]).map((x) => JSON.stringify(x));
    expect(picked).toEqual([all[0], all[5], all[6], all[299]]);
  });
});
