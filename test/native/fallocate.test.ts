import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { FALLOC_PUNCH_HOLE, FALLOC_ZERO_RANGE, native } from '../../native/index.js';
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';
import { tempDir, type TempDir } from '../helpers/temp.js';

noFdLeakEachTest();

const MiB = 1 << 20;

/** `length` bytes of `fd` at `position`. */
function readBack(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return buf.subarray(0, done);
}

describe('native.fallocate', () => {
  let dir: TempDir;
  let fd: number;

  beforeEach(() => {
    dir = tempDir('vfu-falloc-');
    fd = openSync(dir.file('data'), 'w+');
    writeSync(fd, Buffer.alloc(4 * MiB, 0xa5), 0, 4 * MiB, 0);
  });
  afterEach(() => {
    closeSync(fd);
    dir.remove();
  });

  it('exports the two modes with the kernel values', () => {
    expect(FALLOC_PUNCH_HOLE).toBe(0x03);
    expect(FALLOC_ZERO_RANGE).toBe(0x11);
    expect(native.FALLOC_PUNCH_HOLE).toBe(FALLOC_PUNCH_HOLE);
    expect(native.FALLOC_ZERO_RANGE).toBe(FALLOC_ZERO_RANGE);
  });

  it('punching a hole frees the blocks, reads zeros there and keeps the size', async () => {
    const before = fstatSync(fd);
    await native.fallocate(fd, FALLOC_PUNCH_HOLE, MiB, 2 * MiB);
    const after = fstatSync(fd);
    expect(after.size).toBe(before.size);
    // 2 MiB = 4096 512-byte blocks fewer.
    expect(before.blocks - after.blocks).toBeGreaterThanOrEqual((2 * MiB) / 512);
    expect(readBack(fd, MiB, 2 * MiB).every((b) => b === 0)).toBe(true);
    expect(readBack(fd, 0, MiB).every((b) => b === 0xa5)).toBe(true);
    expect(readBack(fd, 3 * MiB, MiB).every((b) => b === 0xa5)).toBe(true);
  });

  it('an unaligned hole zeroes exactly its bytes', async () => {
    await native.fallocate(fd, FALLOC_PUNCH_HOLE, 1000, 10_000);
    const data = readBack(fd, 0, 12_000);
    expect(data.subarray(0, 1000).every((b) => b === 0xa5)).toBe(true);
    expect(data.subarray(1000, 11_000).every((b) => b === 0)).toBe(true);
    expect(data.subarray(11_000).every((b) => b === 0xa5)).toBe(true);
  });

  it('zero range reads zeros and keeps the size', async () => {
    await native.fallocate(fd, FALLOC_ZERO_RANGE, 512, 8192);
    expect(fstatSync(fd).size).toBe(4 * MiB);
    const data = readBack(fd, 0, 16384);
    expect(data.subarray(0, 512).every((b) => b === 0xa5)).toBe(true);
    expect(data.subarray(512, 512 + 8192).every((b) => b === 0)).toBe(true);
    expect(data.subarray(512 + 8192).every((b) => b === 0xa5)).toBe(true);
  });

  it('fallocateSync punches on the calling thread and throws what fallocate rejects with', () => {
    const before = fstatSync(fd).blocks;
    native.fallocateSync(fd, FALLOC_PUNCH_HOLE, 0, MiB);
    expect(before - fstatSync(fd).blocks).toBeGreaterThanOrEqual(MiB / 512);
    expect(readBack(fd, 0, MiB).every((b) => b === 0)).toBe(true);
    expect(() => native.fallocateSync(fd, FALLOC_PUNCH_HOLE, 0, 0)).toThrow(RangeError);
    expect(() => native.fallocateSync(fd, 0x20, 0, 1)).toThrow(RangeError);
    const closed = openSync(dir.file('gone'), 'w+');
    closeSync(closed);
    expect(() => native.fallocateSync(closed, FALLOC_PUNCH_HOLE, 0, 1)).toThrow(
      expect.objectContaining({ code: 'EBADF', syscall: 'fallocate' }),
    );
  });

  it('a range past EOF keeps the size (KEEP_SIZE)', async () => {
    await native.fallocate(fd, FALLOC_PUNCH_HOLE, 3 * MiB, 8 * MiB);
    expect(fstatSync(fd).size).toBe(4 * MiB);
  });

  it('rejects bad arguments with TypeError / RangeError', async () => {
    // Called the way a JS caller could, with whatever arguments.
    const f = (...args: unknown[]): Promise<void> =>
      (native.fallocate as unknown as (...a: unknown[]) => Promise<void>)(...args);
    await expect(f('3', FALLOC_PUNCH_HOLE, 0, 1)).rejects.toThrow(TypeError);
    await expect(f(fd, FALLOC_PUNCH_HOLE, 0n, 1)).rejects.toThrow(TypeError);
    await expect(f(fd)).rejects.toThrow(TypeError);
    await expect(f(-1, FALLOC_PUNCH_HOLE, 0, 1)).rejects.toThrow(RangeError);
    await expect(f(fd, FALLOC_PUNCH_HOLE, -1, 1)).rejects.toThrow(RangeError);
    await expect(f(fd, FALLOC_PUNCH_HOLE, 0.5, 1)).rejects.toThrow(RangeError);
    await expect(f(fd, FALLOC_PUNCH_HOLE, 2 ** 53, 1)).rejects.toThrow(RangeError);
    await expect(f(fd, FALLOC_PUNCH_HOLE, 0, 0)).rejects.toThrow(RangeError);
    await expect(f(fd, FALLOC_PUNCH_HOLE, 0, NaN)).rejects.toThrow(RangeError);
    await expect(f(fd, FALLOC_PUNCH_HOLE, 0, Infinity)).rejects.toThrow(RangeError);
    // Collapse range (0x08) would shift the file: refused before the syscall.
    await expect(f(fd, 0x08, 0, 4096)).rejects.toThrow(RangeError);
    expect(readBack(fd, 0, 4096).every((b) => b === 0xa5)).toBe(true);
  });

  it('surfaces errno errors with .code and .syscall', async () => {
    const closed = openSync(dir.file('gone'), 'w+');
    closeSync(closed);
    await expect(native.fallocate(closed, FALLOC_PUNCH_HOLE, 0, 4096)).rejects.toMatchObject({
      code: 'EBADF',
      syscall: 'fallocate',
    });
    // Read-only fd: EBADF as well.
    const ro = openSync(dir.file('data'), 'r');
    try {
      await expect(native.fallocate(ro, FALLOC_PUNCH_HOLE, 0, 4096)).rejects.toMatchObject({ code: 'EBADF' });
    } finally {
      closeSync(ro);
    }
    // tmpfs (memfd) punches holes but has no ZERO_RANGE.
    const memfd = native.memfdCreate('falloc-test', MiB);
    try {
      await native.fallocate(memfd, FALLOC_PUNCH_HOLE, 0, 4096);
      await expect(native.fallocate(memfd, FALLOC_ZERO_RANGE, 0, 4096)).rejects.toMatchObject({
        code: 'EOPNOTSUPP',
        syscall: 'fallocate',
      });
    } finally {
      native.closeFd(memfd);
    }
    // An eventfd is no file: ENODEV.
    const efd = native.eventfd();
    try {
      const err = await native.fallocate(efd, FALLOC_PUNCH_HOLE, 0, 4096).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as NodeJS.ErrnoException).code).toMatch(/^E[A-Z]+$/);
    } finally {
      native.closeFd(efd);
    }
  });
});
