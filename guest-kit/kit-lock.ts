/**
 * A cross-process lock on a directory name (mkdir is atomic), so parallel test
 * files and processes never provision the same kit twice. A lock whose owner
 * process is gone is stale and taken over.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

function ownerAlive(lockDir: string): boolean {
  try {
    const [host, pidText] = readFileSync(join(lockDir, 'owner'), 'utf8').trim().split(':');
    if (host !== hostname()) return true;
    process.kill(Number(pidText), 0);
    return true;
  } catch (err) {
    // ENOENT: the owner is between mkdir and writing its name: treat as alive.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Runs `fn` while holding `lockDir`; waits (polling) up to `timeoutMs` for another holder. */
export async function withDirLock<T>(lockDir: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let staleChecks = 0;
  for (;;) {
    try {
      mkdirSync(lockDir);
      writeFileSync(join(lockDir, 'owner'), `${hostname()}:${process.pid}\n`);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (!ownerAlive(lockDir)) {
        // Seen dead twice in a row (not a racing fresh owner): take it over.
        if (++staleChecks >= 2) {
          rmSync(lockDir, { recursive: true, force: true });
          staleChecks = 0;
        }
      } else staleChecks = 0;
      if (Date.now() > deadline) throw new Error(`guest kit: timed out waiting for lock ${lockDir}`, { cause: err });
      await sleep(500);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lockDir, { recursive: true, force: true });
  }
}
