/**
 * vitest globalSetup of the `guest` project: provisions the guest kit once
 * (cached; a finished kit is reused in ~0 s) and tells the test files whether
 * guests can run. With CI=true a kit that cannot be provisioned is a failure;
 * locally the guest tests skip with a loud reason.
 */
import { execFileSync } from 'node:child_process';
import type { TestProject } from 'vitest/node';
import { ensureKit } from '../../guest-kit/kit.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Set when guest tests must skip (never under CI=true). */
    guestKitSkipReason: string;
    /** The provisioned kit's directory ('' when skipping). */
    guestKitDir: string;
  }
}

/** True when CI=true (or 1): guest tests must run, never skip. */
export function isCI(): boolean {
  return /^(true|1)$/i.test(process.env.CI ?? '');
}

export default async function setup(project: TestProject): Promise<void> {
  try {
    const kit = await ensureKit();
    const cmd = kit.qemu();
    execFileSync(cmd.file, [...cmd.args, '--version'], { env: { ...process.env, ...cmd.env }, stdio: 'pipe' });
    project.provide('guestKitDir', kit.dir);
    project.provide('guestKitSkipReason', '');
  } catch (err) {
    const reason = `guest kit unavailable: ${(err as Error).message}`;
    if (isCI()) throw new Error(`CI=true: ${reason}`, { cause: err });
    const bar = '!'.repeat(78);
    process.stderr.write(
      `\n${bar}\n!! SKIPPING ALL QEMU GUEST TESTS\n!! ${reason.split('\n').join('\n!! ')}\n${bar}\n\n`,
    );
    project.provide('guestKitDir', '');
    project.provide('guestKitSkipReason', reason);
  }
}
