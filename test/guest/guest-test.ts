/**
 * Helpers for guest test files: `guestTest` is `it` for tests that boot a QEMU
 * guest. When the kit is missing it skips loudly (reason in the test name), or,
 * with CI=true, fails: a guest test never silently skips in CI.
 */
import { inject, it } from 'vitest';
import { isCI } from './global-setup.js';
import { loadKit, type Kit } from '../../guest-kit/kit.js';

/** Why guest tests cannot run here, or undefined when they can. */
function kitSkipReason(): string | undefined {
  let reason: string | undefined;
  try {
    reason = inject('guestKitSkipReason') || undefined;
  } catch {
    reason = undefined;
  }
  if (!reason && !loadKit())
    reason = 'guest kit not provisioned (run the guest tests through vitest: its globalSetup provisions it)';
  return reason;
}

/** The provisioned kit; throws (never skips) if it is missing. */
export function requireKit(): Kit {
  const kit = loadKit();
  if (!kit) throw new Error(kitSkipReason() ?? 'guest kit missing');
  return kit;
}

/** Like vitest's `it`, for tests that boot a guest (default timeout 180 s). */
export function guestTest(name: string, fn: () => Promise<void>, timeoutMs = 180_000): void {
  const reason = kitSkipReason();
  if (reason && !isCI()) {
    it.skip(`${name} [SKIPPED: not CI, ${(reason.split('\n')[0] ?? '').slice(0, 200)}]`, fn);
    return;
  }
  it(
    name,
    async () => {
      requireKit();
      await fn();
    },
    timeoutMs,
  );
}
