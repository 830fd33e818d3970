/**
 * The contract between the guest fuzz runner (runner.ts) and a device target
 * (nvme-target.ts, gpio-target.ts): a seeded action generator, and a session
 * that performs actions on a freshly served device as a guest driver would
 * and checks that the device is still alive (the liveness probe).
 */
import { Errno } from '../../protocol/constants.js';
import { VfioUserClientError } from '../../client/index.js';

/** An action is plain JSON (printed in a repro, replayed from it). */
export type Action = { k: string };

export interface SessionOptions {
  /** A request with no reply within this bound is a hang (ms). */
  hangMs: number;
  /** The seed (a target may vary its device's configuration by it). */
  seed: number;
}

export interface FuzzSession<A extends Action> {
  /** Perform one action. Errors the device is entitled to (an errno reply, an NVMe error status) are swallowed. */
  execute(action: A): Promise<void>;
  /** Bring the device back to a known state and check it works; throws FuzzFailure('probe') if not. */
  probe(): Promise<void>;
  /** Why the connection to the device ended, once it did (a death). */
  readonly deathReason: string | undefined;
  /** Counters worth reporting (what the guest saw happen). */
  readonly stats: Record<string, number>;
  /** Stop the device and free everything the session opened. */
  close(): Promise<void>;
}

export interface FuzzTarget<A extends Action> {
  readonly name: string;
  /** Action i of `seed`'s stream is the i-th value; the same on every run. */
  actions(seed: number): Iterator<A>;
  /** Serve a fresh device and attach a hostile guest to it (ready for the first action). */
  start(options: SessionOptions): Promise<FuzzSession<A>>;
}

export type FailureKind = 'death' | 'hang' | 'probe' | 'injected' | 'error';

/** A finding: the device died, hung or failed its probe. */
export class FuzzFailure extends Error {
  constructor(
    readonly kind: FailureKind,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Classify an error a client request threw: a timeout is a hang, a lost
 * connection a death; any other errno is the device's answer to a hostile
 * request (undefined: keep going).
 */
export function classify(err: unknown): FuzzFailure | undefined {
  if (err instanceof FuzzFailure) return err;
  if (err instanceof VfioUserClientError) {
    if (err.errno === Errno.ETIMEDOUT) return new FuzzFailure('hang', err.message);
    if (err.errno === Errno.ECONNRESET) return new FuzzFailure('death', err.message);
    return undefined;
  }
  return new FuzzFailure('error', err instanceof Error ? (err.stack ?? err.message) : String(err));
}

/** Run `p`, swallowing the errnos a hostile request earns (see classify). */
export async function tolerate(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    const f = classify(err);
    if (f) throw f;
  }
}
