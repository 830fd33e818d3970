/**
 * Namespace reads through the page cache (preadv2 RWF_NOWAIT) on real files:
 * fully cached, partly cached (the rest read on the thread pool), not cached,
 * and with page-cache reads turned off.
 *
 * These claims need a file system with a page cache that serves RWF_NOWAIT
 * reads, and O_DIRECT to write data that is not cached. tmpfs has neither on
 * every kernel (no O_DIRECT before Linux 6.6; on 6.x RWF_NOWAIT reads answer
 * EOPNOTSUPP), so the files go to the first of the OS temp dir, the
 * repository's node_modules/.cache and ~/.cache that has both; none: every
 * test fails, saying why (never a vacuous pass).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeSync, constants as fsc, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { native } from '../../native/index.js';
import { NOWAIT_UNSUPPORTED, readNowait } from '../../server/file-io/index.js';
import { Namespace } from '../../devices/nvme/namespace.js';

const SIZE = 4 << 20;
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CANDIDATES = [tmpdir(), join(ROOT, 'node_modules', '.cache'), join(homedir(), '.cache')];

/** Why files under `base` cannot show these claims, or undefined when they can. */
function unsuitable(base: string): string | undefined {
  let dir: string;
  try {
    mkdirSync(base, { recursive: true });
    dir = mkdtempSync(join(base, 'vfu-nvme-pc-probe-'));
  } catch (err) {
    return (err as Error).message;
  }
  try {
    const path = join(dir, 'probe');
    const fd = openSync(path, 'w+');
    try {
      writeSync(fd, new Uint8Array(8192).fill(1), 0, 8192, 0);
      if (readNowait(fd, [new Uint8Array(4096)], 0) === NOWAIT_UNSUPPORTED) return 'RWF_NOWAIT reads unsupported';
    } finally {
      closeSync(fd);
    }
    try {
      closeSync(openSync(path, fsc.O_RDWR | fsc.O_DIRECT));
    } catch (err) {
      return `no O_DIRECT (${(err as NodeJS.ErrnoException).code})`;
    }
    return undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

let base: string | undefined;
let dir: string;
let data: Buffer;

/** The first candidate that shows the claims; throws (failing the test that asked) when there is none. */
function suitableBase(): string {
  if (base !== undefined) return base;
  const tried: string[] = [];
  for (const candidate of CANDIDATES) {
    const why = unsuitable(candidate);
    if (why === undefined) return (base = candidate);
    tried.push(`${candidate}: ${why}`);
  }
  throw new Error(
    `no file system here serves page-cache reads with RWF_NOWAIT and takes O_DIRECT writes (${tried.join('; ')})`,
  );
}

beforeEach(() => {
  dir = mkdtempSync(join(suitableBase(), 'vfu-nvme-pc-'));
  data = randomBytes(SIZE);
});
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Write `data` with O_DIRECT (from an aligned buffer), so none of it is in the page cache. */
function writeCold(path: string): void {
  const fd = openSync(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_DIRECT, 0o600);
  const mfd = native.memfdCreate('aligned', SIZE);
  const m = native.mmapFd(mfd, 0, SIZE, native.PROT_READ | native.PROT_WRITE);
  try {
    const src = new Uint8Array(m.buffers[0]!);
    src.set(data);
    expect(writeSync(fd, src, 0, SIZE, 0)).toBe(SIZE);
  } finally {
    closeSync(fd);
    m.unmap();
    native.closeFd(mfd);
  }
}

/** Split `buf` into page-sized views, like a PRP transfer. */
function pages(buf: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < buf.length; i += 4096) out.push(buf.subarray(i, i + 4096));
  return out;
}

describe('NVMe namespace page-cache reads', () => {
  it('serves cached data synchronously and cold data asynchronously, always the file bytes', async () => {
    const path = join(dir, 'ns.img');
    writeCold(path);
    const ns = new Namespace(1, { path, lbaSize: 512 }, 'PC');
    try {
      const buf = new Uint8Array(1 << 20);
      const at = 2 << 20;
      // Nothing cached: readvNow declines, readv reads it on the thread pool.
      expect(ns.readvNow(at, pages(buf))).toBe(false);
      expect(ns.cacheStats).toEqual({ hits: 0, partial: 0, misses: 1 });
      await ns.readv(at, pages(buf));
      expect(Buffer.from(buf).equals(data.subarray(at, at + buf.length))).toBe(true);
      // Now cached: served before readvNow returns.
      buf.fill(0);
      const hits = ns.cacheStats.hits;
      expect(ns.readvNow(at, pages(buf))).toBe(true);
      expect(Buffer.from(buf).equals(data.subarray(at, at + buf.length))).toBe(true);
      expect(ns.cacheStats.hits).toBe(hits + 1);
    } finally {
      await ns.close();
    }
  });

  it('completes a partly cached read from the file', async () => {
    const path = join(dir, 'ns.img');
    writeCold(path);
    // Cache the first page only: a whole-page buffered write of the same bytes (it reads nothing, so no read-ahead).
    const fd = openSync(path, 'r+');
    writeSync(fd, data, 0, 4096, 0);
    closeSync(fd);
    const ns = new Namespace(1, { path, lbaSize: 512 }, 'PC');
    try {
      const buf = new Uint8Array(SIZE);
      await ns.readv(0, pages(buf));
      expect(Buffer.from(buf).equals(data)).toBe(true);
      expect(ns.cacheStats).toEqual({ hits: 0, partial: 1, misses: 0 }); // the first page synchronously, the rest on the thread pool
      const small = new Uint8Array(1000);
      await ns.read(SIZE - 1000, small);
      expect(Buffer.from(small).equals(data.subarray(SIZE - 1000))).toBe(true);
    } finally {
      await ns.close();
    }
  });

  it('sees writes, and with pageCacheReads off goes through read-ahead instead', async () => {
    const path = join(dir, 'ns.img');
    const ns = new Namespace(1, { path, size: SIZE, lbaSize: 4096, pageCacheReads: false }, 'PC');
    try {
      await ns.writev(0, pages(data));
      const buf = new Uint8Array(8192);
      expect(ns.readvNow(8192, pages(buf))).toBe(false);
      await ns.readv(8192, pages(buf));
      expect(Buffer.from(buf).equals(data.subarray(8192, 16384))).toBe(true);
      expect(ns.cacheStats).toEqual({ hits: 0, partial: 0, misses: 0 });
      ns.pageCacheReads = true;
      const fresh = randomBytes(4096);
      await ns.write(12288, fresh);
      expect(ns.readvNow(8192, pages(buf))).toBe(true);
      expect(Buffer.from(buf.subarray(4096)).equals(fresh)).toBe(true);
    } finally {
      await ns.close();
    }
  });
});
