/** The per-test fd leak check as vitest hooks (kept apart from fds.ts, which runs outside vitest too). */
import { afterEach, beforeEach } from 'vitest';
import { fdBaseline, type FdBaseline } from './fds.js';

/**
 * Registers hooks in the calling scope (a file or a describe block): each test
 * must leave no fd open that it opened, checked after the test once closes have settled.
 */
export function noFdLeakEachTest(): void {
  let fds: FdBaseline;
  beforeEach(() => {
    fds = fdBaseline();
  });
  afterEach(async () => {
    await fds.settle();
  });
}
