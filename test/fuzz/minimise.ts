/**
 * The guest fuzzers' minimiser: delta debugging (Zeller's ddmin) over the
 * indices of a failing run's actions. Each candidate list is replayed on a
 * fresh device (runGuestFuzz with `only`); a list "fails" when the replay
 * ends with a finding of the same kind (a hang only when a second replay
 * hangs too: a stall of a loaded machine is not a finding). The result is 1-minimal: dropping
 * any one of its actions makes the failure go away (for a failure that
 * depends on timing, as often as the replays showed it).
 */
import { runGuestFuzz, pickActions, type RunOptions } from './runner.js';
import type { Action, FailureKind, FuzzTarget } from './target.js';

export interface MinimiseOptions<A extends Action> {
  seed: number;
  /** The failing list of action indices (increasing): a run's prefix up to its failure, or a repro. */
  candidates: readonly number[];
  /** The finding to keep (default: any). */
  kind?: FailureKind | undefined;
  probeEvery?: number | undefined;
  hangMs?: number | undefined;
  inject?: RunOptions<A>['inject'];
  log?: ((line: string) => void) | undefined;
}

/** A minimal repro: replay with `npm run fuzz -- --target T --seed S --only I,J,...`. */
export interface Repro<A extends Action> {
  target: string;
  seed: number;
  kind: FailureKind;
  indices: number[];
  actions: A[];
  /** Replays the minimiser ran. */
  replays: number;
}

/** Split `xs` into `n` nearly equal consecutive parts. */
function split<T>(xs: readonly T[], n: number): T[][] {
  const parts: T[][] = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    const len = Math.floor((xs.length - at) / (n - i));
    parts.push(xs.slice(at, at + len));
    at += len;
  }
  return parts;
}

/**
 * ddmin: the smallest failing subsequence it finds by keeping one chunk
 * (while chunks are few) or dropping chunks, at ever finer grain. Chunks are
 * dropped in one sweep per grain (a dropped chunk does not restart the
 * sweep), so a grain costs one replay per chunk; the last grain is single
 * actions, which makes the result 1-minimal.
 */
async function ddmin<T>(items: readonly T[], fails: (xs: readonly T[]) => Promise<boolean>): Promise<T[]> {
  let xs = [...items];
  let n = 2;
  while (xs.length >= 2) {
    let parts = split(xs, n);
    let kept: T[] | undefined;
    if (n <= 8)
      for (const part of parts)
        if (part.length > 0 && part.length < xs.length && (await fails(part))) {
          kept = part;
          break;
        }
    if (kept) {
      xs = kept;
      n = 2;
      continue;
    }
    let dropped = false;
    for (let i = 0; i < parts.length && parts.length > 1;) {
      const rest = parts.filter((_, j) => j !== i).flat();
      if (await fails(rest)) {
        parts = parts.filter((_, j) => j !== i);
        dropped = true;
      } else i++;
    }
    if (dropped) {
      xs = parts.flat();
      n = Math.max(2, Math.min(parts.length, xs.length));
      continue;
    }
    if (n >= xs.length) break;
    n = Math.min(xs.length, n * 2);
  }
  return xs;
}

/** Shrink a failing list of actions of `target` to a minimal one that fails the same way. */
export async function minimiseFailure<A extends Action>(
  target: FuzzTarget<A>,
  o: MinimiseOptions<A>,
): Promise<Repro<A>> {
  let replays = 0;
  let kind: FailureKind | undefined = o.kind;
  const replay = async (indices: readonly number[]): Promise<FailureKind | undefined> => {
    replays++;
    const r = await runGuestFuzz(target, {
      seed: o.seed,
      count: indices[indices.length - 1]! + 1,
      only: indices,
      probeEvery: o.probeEvery,
      hangMs: o.hangMs,
      inject: o.inject,
    });
    return r.failure?.kind;
  };
  const fails = async (indices: readonly number[]): Promise<boolean> => {
    let found = await replay(indices);
    // A hang is a timeout: on a loaded machine an innocent list can stall past the bound once.
    // Count it only when a second replay hangs too, so the shrinking never follows a stall.
    if (found === 'hang' && (await replay(indices)) !== 'hang') found = undefined;
    const failed = found !== undefined && (kind === undefined || found === kind);
    if (failed) kind ??= found;
    o.log?.(`${indices.length} actions: ${failed ? `fails (${found})` : 'passes'}`);
    return failed;
  };
  if (!(await fails(o.candidates))) throw new Error('the candidate list does not fail: nothing to minimise');
  const indices = await ddmin(o.candidates, fails);
  return {
    target: target.name,
    seed: o.seed,
    kind: kind!,
    indices,
    actions: pickActions(target, o.seed, indices),
    replays,
  };
}
