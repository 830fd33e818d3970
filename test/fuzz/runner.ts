/**
 * The guest fuzz runner: performs a target's seeded actions on a fresh
 * device, a liveness probe every `probeEvery` actions and once at the end,
 * and watches for deaths (the connection ended), hangs (no reply within the
 * bound, or the event loop stuck that long) and probe failures. It samples the
 * process's open fds and RSS at each probe (the device is served in this
 * process, so a leak or a growing heap of the device shows here).
 */
import { listOpenFds } from '../helpers/fds.js';
import { classify, FuzzFailure, type Action, type FailureKind, type FuzzTarget } from './target.js';

export interface RunOptions<A extends Action> {
  seed: number;
  /** Actions of the seed's stream to perform: 0 .. count-1. */
  count: number;
  /** Only these indices of the stream (a repro, a minimiser's candidate), in increasing order. */
  only?: readonly number[] | undefined;
  /** A probe after every this many actions (default 250). */
  probeEvery?: number | undefined;
  /** The hang bound in ms (default 10 000). */
  hangMs?: number | undefined;
  /**
   * An injected failure (tests of the minimiser): a fresh checker per run,
   * told each action as it is performed; a returned string fails the run.
   */
  inject?: (() => (action: A, index: number) => string | undefined) | undefined;
  /** Set to the index of the action being performed (a crash handler can name it). */
  current?: { index: number } | undefined;
  /** Called after each probe. */
  onProbe?: ((report: RunReport) => void) | undefined;
}

export interface Sample {
  start: number;
  peak: number;
  end: number;
}

export interface RunReport {
  target: string;
  seed: number;
  /** Actions performed. */
  actions: number;
  probes: number;
  wallMs: number;
  deaths: number;
  hangs: number;
  probeFailures: number;
  /** Open fds of the process (device and guest both) after the first and the last probe, and the most seen at a probe. */
  fds: Sample;
  /** Resident set size in MiB, same points. */
  rssMiB: Sample;
  /** The target's counters (e.g. NVMe completions consumed). */
  stats: Record<string, number>;
  /** The first finding (the run stops there): its kind, the index of the action it followed, the message. */
  failure?: { kind: FailureKind; index: number; message: string };
}

/** The stream's actions at `indices` (increasing), generated up to the last one. */
export function pickActions<A extends Action>(target: FuzzTarget<A>, seed: number, indices: readonly number[]): A[] {
  const it = target.actions(seed);
  const out: A[] = [];
  let i = 0;
  for (const want of indices) {
    let a = it.next().value as A;
    while (i < want) {
      a = it.next().value as A;
      i++;
    }
    out.push(a);
    i++;
  }
  return out;
}

const rssMiB = (): number => Math.round((process.memoryUsage.rss() / 2 ** 20) * 10) / 10;

/** Await `p`, but no longer than `ms` (a hang); an event loop that was stuck that long is a hang too. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FuzzFailure('hang', `${what}: no answer within ${ms} ms`)), ms);
  });
  try {
    const v = await Promise.race([p, timeout]);
    if (Date.now() - started > ms) throw new FuzzFailure('hang', `${what}: took ${Date.now() - started} ms`);
    return v;
  } finally {
    clearTimeout(timer);
  }
}

/** Run `options.count` actions (or `options.only`) of `target` on a fresh device. */
export async function runGuestFuzz<A extends Action>(
  target: FuzzTarget<A>,
  options: RunOptions<A>,
): Promise<RunReport> {
  const probeEvery = options.probeEvery ?? 250;
  const hangMs = options.hangMs ?? 10_000;
  const started = Date.now();
  const report: RunReport = {
    target: target.name,
    seed: options.seed,
    actions: 0,
    probes: 0,
    wallMs: 0,
    deaths: 0,
    hangs: 0,
    probeFailures: 0,
    fds: { start: 0, peak: 0, end: 0 },
    rssMiB: { start: 0, peak: 0, end: 0 },
    stats: {},
  };
  const sample = async (first: boolean) => {
    // A close can be a loop turn behind the reply that caused it (a replaced eventfd, a DMA map's fd):
    // give the count up to 100 ms to come back down before it counts as growth.
    let fds = listOpenFds().length;
    for (let i = 0; i < 20 && !first && fds > report.fds.start; i++) {
      await new Promise((r) => setTimeout(r, 5));
      fds = Math.min(fds, listOpenFds().length);
    }
    const rss = rssMiB();
    if (first) {
      report.fds = { start: fds, peak: fds, end: fds };
      report.rssMiB = { start: rss, peak: rss, end: rss };
    }
    report.fds.end = fds;
    report.fds.peak = Math.max(report.fds.peak, fds);
    report.rssMiB.end = rss;
    report.rssMiB.peak = Math.max(report.rssMiB.peak, rss);
  };
  const session = await target.start({ hangMs, seed: options.seed });
  const check = options.inject?.();
  let index = -1;
  const fail = (f: FuzzFailure) => {
    const kind = session.deathReason !== undefined ? 'death' : f.kind;
    const message =
      session.deathReason !== undefined ? `connection ended: ${session.deathReason} (${f.message})` : f.message;
    report.failure = { kind, index, message };
    if (kind === 'death') report.deaths++;
    else if (kind === 'hang') report.hangs++;
    else if (kind === 'probe') report.probeFailures++;
  };
  const probe = async () => {
    await within(session.probe(), hangMs * 2, 'probe');
    report.probes++;
    await sample(report.probes === 1);
    options.onProbe?.(report);
  };
  try {
    await probe();
    const it = target.actions(options.seed);
    const only = options.only;
    let next = 0;
    for (let i = 0; i < options.count; i++) {
      const action = it.next().value as A;
      if (only) {
        if (next >= only.length) break;
        if (only[next] !== i) continue;
        next++;
      }
      index = i;
      if (options.current) options.current.index = i;
      await within(session.execute(action), hangMs, `action ${i} (${action.k})`);
      report.actions++;
      const injected = check?.(action, i);
      if (injected !== undefined) throw new FuzzFailure('injected', injected);
      if (session.deathReason !== undefined) throw new FuzzFailure('death', 'after the action');
      if (report.actions % probeEvery === 0) await probe();
    }
    if (report.actions % probeEvery !== 0 || report.actions === 0) await probe();
  } catch (err) {
    fail(classify(err) ?? new FuzzFailure('error', String(err)));
  } finally {
    report.wallMs = Date.now() - started;
    report.stats = { ...session.stats };
    // A device wedged for good does not let its server close either: that is a hang too, not a stuck fuzzer.
    try {
      await within(session.close(), hangMs, 'closing the device');
    } catch (err) {
      if (!report.failure) fail(classify(err) ?? new FuzzFailure('error', String(err)));
    }
  }
  return report;
}
