/**
 * The public host-file I/O API (server/file-io, exported by 'vfio-user-ts'):
 * each mode and call does what its name says on a real file. The syscalls'
 * own corner cases are tested with the addon (test/native/fallocate.test.ts,
 * mapping-sync-io.test.ts, writeback.test.ts).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import {
  fallocate,
  fallocateSync,
  NOWAIT_UNSUPPORTED,
  NOWAIT_WOULD_BLOCK,
  readNowait,
  startWriteback,
  type FallocateMode,
} from 'vfio-user-ts';
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';
import { tempDir, type TempDir } from '../helpers/temp.js';

noFdLeakEachTest();

const MiB = 1 << 20;

function readBack(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  expect(readSync(fd, buf, 0, length, position)).toBe(length);
  return buf;
}

describe('host-file I/O', () => {
  let dir: TempDir;
  let fd: number;

  beforeEach(() => {
    dir = tempDir('vfu-file-io-');
    fd = openSync(dir.file('data'), 'w+');
    writeSync(fd, Buffer.alloc(4 * MiB, 0xa5), 0, 4 * MiB, 0);
  });
  afterEach(() => {
    closeSync(fd);
    dir.remove();
  });

  it("'punch-hole' frees the blocks and 'zero-range' zeroes in place, both keeping the size", async () => {
    const before = fstatSync(fd);
    await fallocate(fd, 'punch-hole', MiB, MiB);
    const punched = fstatSync(fd);
    expect(before.blocks - punched.blocks).toBeGreaterThanOrEqual(MiB / 512);
    expect(readBack(fd, MiB, MiB).every((b) => b === 0)).toBe(true);
    await fallocate(fd, 'zero-range', 3 * MiB, 4096);
    expect(readBack(fd, 3 * MiB, 4096).every((b) => b === 0)).toBe(true);
    expect(readBack(fd, 3 * MiB + 4096, 4096).every((b) => b === 0xa5)).toBe(true);
    fallocateSync(fd, 'punch-hole', 0, 4096);
    expect(readBack(fd, 0, 4096).every((b) => b === 0)).toBe(true);
    expect(readBack(fd, 4096, 4096).every((b) => b === 0xa5)).toBe(true);
    expect(fstatSync(fd).size).toBe(4 * MiB);
  });

  it('refuses a mode it does not know, and reports the errno of a failed call', async () => {
    await expect(fallocate(fd, 'collapse' as FallocateMode, 0, 4096)).rejects.toThrow(TypeError);
    expect(() => fallocateSync(fd, 'collapse' as FallocateMode, 0, 4096)).toThrow(TypeError);
    await expect(fallocate(fd, 'punch-hole', 0, 0)).rejects.toThrow(RangeError);
    const closed = openSync(dir.file('data'), 'r');
    closeSync(closed);
    await expect(fallocate(closed, 'punch-hole', 0, 4096)).rejects.toMatchObject({ code: 'EBADF' });
    await expect(startWriteback(closed, 0, 0)).rejects.toMatchObject({ code: 'EBADF' });
  });

  it('reads what the page cache holds at once, and starts writeback', async () => {
    const views = [new Uint8Array(4096), new Uint8Array(100)];
    const n = readNowait(fd, views, 8192);
    expect([4196, NOWAIT_UNSUPPORTED]).toContain(n); // just written, so cached; tmpfs may refuse RWF_NOWAIT
    expect(NOWAIT_WOULD_BLOCK).toBe(-1);
    if (n === 4196) expect(views.every((v) => v.every((b) => b === 0xa5))).toBe(true);
    await expect(startWriteback(fd, 0, 0)).resolves.toBeUndefined();
  });
});
