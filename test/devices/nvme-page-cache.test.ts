/**
 * Namespace reads through the page cache (preadv2 RWF_NOWAIT) on real files:
 * fully cached, partly cached (the rest read on the thread pool), not cached,
 * and with page-cache reads turned off.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeSync, constants as fsc, openSync, readSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { native } from '../../native/index.js';
import { Namespace } from '../../devices/nvme/namespace.js';
import { tempDir, type TempDir } from '../helpers/temp.js';

const SIZE = 4 << 20;
let dir: TempDir;
let data: Buffer;

beforeEach(() => {
  dir = tempDir('nvme-pc-');
  data = randomBytes(SIZE);
});
afterEach(() => dir.remove());

/** Write `data` with O_DIRECT so none of it is in the page cache; false where O_DIRECT is refused (tmpfs). */
function writeCold(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_DIRECT, 0o600);
  } catch {
    return false;
  }
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
  return true;
}

/** Split `buf` into page-sized views, like a PRP transfer. */
function pages(buf: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < buf.length; i += 4096) out.push(buf.subarray(i, i + 4096));
  return out;
}

describe('NVMe namespace page-cache reads', () => {
  it('serves cached data synchronously and cold data asynchronously, always the file bytes', async () => {
    const path = dir.file('ns.img');
    const cold = writeCold(path);
    const ns = new Namespace(1, { path, lbaSize: 512 }, 'PC');
    try {
      const buf = new Uint8Array(1 << 20);
      const at = 2 << 20;
      if (cold) {
        // Nothing cached: readvNow declines, readv reads it on the thread pool.
        expect(ns.readvNow(at, pages(buf))).toBe(false);
        await ns.readv(at, pages(buf));
        expect(Buffer.from(buf).equals(data.subarray(at, at + buf.length))).toBe(true);
      }
      // Now cached: served before readvNow returns.
      buf.fill(0);
      expect(ns.readvNow(at, pages(buf))).toBe(true);
      expect(Buffer.from(buf).equals(data.subarray(at, at + buf.length))).toBe(true);
      expect(ns.cacheStats.hits).toBeGreaterThan(0);
    } finally {
      await ns.close();
    }
  });

  it('completes a partly cached read from the file', async () => {
    const path = dir.file('ns.img');
    if (!writeCold(path)) return; // everything is cached on this file system: nothing partial to test
    // Warm the start only (the kernel reads ahead some more; the 4 MiB read is then partly cached).
    const fd = openSync(path, 'r');
    readSync(fd, Buffer.alloc(4096), 0, 4096, 0);
    closeSync(fd);
    const ns = new Namespace(1, { path, lbaSize: 512 }, 'PC');
    try {
      const buf = new Uint8Array(SIZE);
      await ns.readv(0, pages(buf));
      expect(Buffer.from(buf).equals(data)).toBe(true);
      expect(ns.cacheStats.partial + ns.cacheStats.hits).toBe(1); // one synchronous attempt, whatever it found
      const small = new Uint8Array(1000);
      await ns.read(SIZE - 1000, small);
      expect(Buffer.from(small).equals(data.subarray(SIZE - 1000))).toBe(true);
    } finally {
      await ns.close();
    }
  });

  it('sees writes, and with pageCacheReads off goes through read-ahead instead', async () => {
    const path = dir.file('ns.img');
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
