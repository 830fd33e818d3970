/** Temporary directories and socket paths for tests (removed by the returned cleanup). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TempDir {
  readonly path: string;
  /** A path inside the directory (for UNIX sockets: keep names short, sun_path is 108 bytes). */
  readonly file: (name: string) => string;
  readonly remove: () => void;
}

/** A fresh directory under the OS temp dir. */
export function tempDir(prefix = 'vfu-'): TempDir {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return {
    path,
    file: (name) => join(path, name),
    remove: () => rmSync(path, { recursive: true, force: true }),
  };
}

let counter = 0;
/** A unique socket path in a fresh temp dir, with its cleanup. */
export function tempSocketPath(name = 'dev'): { path: string; remove(): void } {
  const dir = tempDir();
  return { path: dir.file(`${name}-${counter++}.sock`), remove: dir.remove };
}
