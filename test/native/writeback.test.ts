/**
 * native.startWriteback (sync_file_range SYNC_FILE_RANGE_WRITE on a worker)
 * and the NVMe namespace's write-behind built on it: dirty pages start
 * going to disk before the Flush, a file that refuses turns it off, and
 * closing waits for a kick in flight.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WriteBehind } from '../../devices/nvme/write-behind.js';
import { Namespace } from '../../devices/nvme/namespace.js';
import { native } from '../../native/index.js';
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';
import { tempDir, type TempDir } from '../helpers/temp.js';

noFdLeakEachTest();

const MiB = 1 << 20;
let dir: TempDir;

beforeEach(() => {
  dir = tempDir('vfu-wb-');
});
afterEach(() => {
  dir.remove();
});

describe('native.startWriteback', () => {
  // Whether the kernel really started writeback is not cheaply observable (page flags in
  // /proc/kpageflags): only the call's result is checked.
  it('resolves for a written file range, and for length 0 (to the end of the file)', async () => {
    const fd = openSync(dir.file('data'), 'w+');
    try {
      writeSync(fd, Buffer.alloc(2 * MiB, 0x5a), 0, 2 * MiB, 0);
      await expect(native.startWriteback(fd, 0, 2 * MiB)).resolves.toBeUndefined();
      await expect(native.startWriteback(fd, MiB, 0)).resolves.toBeUndefined(); // 0: to the end
    } finally {
      closeSync(fd);
    }
  });

  it('rejects bad arguments and fds that are not files, with errno codes', async () => {
    await expect(native.startWriteback(-1, 0, 1)).rejects.toThrow(RangeError);
    await expect(native.startWriteback('x' as unknown as number, 0, 1)).rejects.toThrow(TypeError);
    await expect(native.startWriteback(0, -1, 1)).rejects.toThrow(RangeError);
    const [r, w] = native.socketpair();
    try {
      await expect(native.startWriteback(w, 0, 4096)).rejects.toMatchObject({
        code: 'ESPIPE',
        syscall: 'sync_file_range',
      }); // a socket is no file
    } finally {
      closeSync(r);
      closeSync(w);
    }
  });
});

describe('NVMe namespace write-behind', () => {
  it('kicks writeback once a megabyte was written, and Flush and close still work', async () => {
    const ns = new Namespace(1, { path: dir.file('ns.img'), size: 8 * MiB }, 'WB');
    const chunk = new Uint8Array(256 << 10).fill(7);
    for (let i = 0; i < 12; i++) await ns.writev(i * chunk.length, [chunk]);
    expect(ns.writeBehind!.stats.kicks).toBeGreaterThan(0);
    expect(ns.writeBehind!.stats.refused).toBe(false);
    await ns.flush();
    await ns.close();
  });

  it('turns itself off on a file that refuses sync_file_range', async () => {
    const [r, w] = native.socketpair();
    try {
      const wb = new WriteBehind(w, 4096);
      wb.wrote(0, 8192);
      await wb.idle();
      expect(wb.stats).toEqual({ kicks: 1, refused: true });
      wb.wrote(0, 8192); // off: no further kicks
      await wb.idle();
      expect(wb.stats.kicks).toBe(1);
    } finally {
      closeSync(r);
      closeSync(w);
    }
  });
});
