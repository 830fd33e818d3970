/**
 * native.preadvNowait: synchronous preadv2 with RWF_NOWAIT on real files,
 * into plain buffers and into views of a real mmap'd memfd (guest memory),
 * plus hostile arguments.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeSync, constants as fsc, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { native, NOWAIT_UNSUPPORTED, NOWAIT_WOULD_BLOCK } from '../../native/index.js';
import { fdBaseline, type FdBaseline } from '../helpers/fds.js';
import { tempDir, type TempDir } from '../helpers/temp.js';

const RW = native.PROT_READ | native.PROT_WRITE;

let baseline: FdBaseline;
let dir: TempDir;
let data: Buffer;
let fd: number;

beforeEach((ctx) => {
  baseline = fdBaseline();
  dir = tempDir('sync-io-');
  data = randomBytes(64 * 1024);
  writeFileSync(dir.file('disk.img'), data); // buffered: now in the page cache
  fd = openSync(dir.file('disk.img'), 'r+');
  // tmpfs (a tmpfs TMPDIR) cannot do RWF_NOWAIT reads: every test here would fail for that alone.
  if (native.preadvNowait(fd, [new Uint8Array(1)], 0) === NOWAIT_UNSUPPORTED) {
    // Under CI nothing may skip: a CI host whose temp dir cannot show this fails instead.
    if (process.env.CI) throw new Error(`CI: no RWF_NOWAIT reads in ${dir.path}`);
    ctx.skip(`no RWF_NOWAIT reads in ${dir.path}`);
  }
});

afterEach(async () => {
  closeSync(fd);
  dir.remove();
  await baseline.settle();
});

describe('native.preadvNowait', () => {
  it('reads cached data into several views in order', () => {
    const a = new Uint8Array(100);
    const b = Buffer.alloc(5000);
    const c = new DataView(new ArrayBuffer(12));
    expect(native.preadvNowait(fd, [a, b, c], 10)).toBe(5112);
    expect(Buffer.from(a).equals(data.subarray(10, 110))).toBe(true);
    expect(b.equals(data.subarray(110, 5110))).toBe(true);
    expect(Buffer.from(c.buffer).equals(data.subarray(5110, 5122))).toBe(true);
  });

  it('reads straight into views of mapped guest memory', () => {
    const mfd = native.memfdCreate('guest', 16384);
    const m = native.mmapFd(mfd, 0, 16384, RW);
    try {
      const pages = [new Uint8Array(m.buffers[0]!, 8192, 4096), new Uint8Array(m.buffers[0]!, 0, 4096)];
      expect(native.preadvNowait(fd, pages, 4096)).toBe(8192);
      // What landed in the mapping is what the memfd holds.
      const back = Buffer.alloc(8192);
      readSync(mfd, back, 0, 4096, 8192);
      readSync(mfd, back, 4096, 4096, 0);
      expect(back.equals(data.subarray(4096, 12288))).toBe(true);
      // After unmap the views are detached (empty): nothing is read, nothing crashes.
      m.unmap();
      expect(native.preadvNowait(fd, pages, 0)).toBe(0);
    } finally {
      m.unmap();
      native.closeFd(mfd);
    }
  });

  it('stops at end of file: short count, then 0', () => {
    const b = new Uint8Array(4096);
    expect(native.preadvNowait(fd, [b], data.length - 100)).toBe(100);
    expect(native.preadvNowait(fd, [b], data.length)).toBe(0);
    expect(native.preadvNowait(fd, [b], 1e12)).toBe(0);
    expect(native.preadvNowait(fd, [], 0)).toBe(0);
    expect(native.preadvNowait(fd, [new Uint8Array(0)], 0)).toBe(0);
  });

  it('refuses data that is not in the page cache instead of blocking', (ctx) => {
    // Written with O_DIRECT, the bytes are on disk but not cached.
    const path = dir.file('cold.img');
    let wfd: number;
    try {
      wfd = openSync(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_DIRECT, 0o600);
    } catch (err) {
      // A file system without O_DIRECT (tmpfs): every read there is cached, nothing to test.
      expect((err as NodeJS.ErrnoException).code).toBe('EINVAL');
      if (process.env.CI) throw new Error(`CI: no O_DIRECT in ${dir.path}`, { cause: err });
      ctx.skip(`no O_DIRECT in ${dir.path} (tmpfs?): cannot make uncached data`);
      return;
    }
    const mfd = native.memfdCreate('aligned', 1 << 20); // page-aligned memory for O_DIRECT
    const m = native.mmapFd(mfd, 0, 1 << 20, RW);
    const src = new Uint8Array(m.buffers[0]!);
    src.fill(0x5a);
    try {
      expect(writeSync(wfd, src, 0, src.length, 0)).toBe(src.length);
    } finally {
      closeSync(wfd);
      m.unmap();
      native.closeFd(mfd);
    }
    const rfd = openSync(path, 'r');
    try {
      const b = new Uint8Array(4096);
      expect(native.preadvNowait(rfd, [b], 512 * 1024)).toBe(NOWAIT_WOULD_BLOCK);
      // A blocking read brings it in; then RWF_NOWAIT serves it.
      readSync(rfd, Buffer.alloc(4096), 0, 4096, 512 * 1024);
      expect(native.preadvNowait(rfd, [b], 512 * 1024)).toBe(4096);
      expect(b.every((x) => x === 0x5a)).toBe(true);
    } finally {
      closeSync(rfd);
    }
  });

  it('reports a read into read-only memory as EFAULT, without crashing', () => {
    const mfd = native.memfdCreate('ro', 4096);
    const m = native.mmapFd(mfd, 0, 4096, native.PROT_READ);
    try {
      expect(() => native.preadvNowait(fd, [new Uint8Array(m.buffers[0]!)], 0)).toThrow(
        expect.objectContaining({ code: 'EFAULT' }),
      );
    } finally {
      m.unmap();
      native.closeFd(mfd);
    }
  });

  it('rejects bad arguments with TypeError/RangeError and bad fds with errno errors', () => {
    const b = new Uint8Array(16);
    expect(() => native.preadvNowait(fd, b as unknown as Uint8Array[], 0)).toThrow(TypeError);
    expect(() => native.preadvNowait(fd, [b, 'x' as unknown as Uint8Array], 0)).toThrow(TypeError);
    expect(() => native.preadvNowait(fd, [new ArrayBuffer(8) as unknown as Uint8Array], 0)).toThrow(TypeError);
    expect(() => native.preadvNowait(fd, [b], -1)).toThrow(RangeError);
    expect(() => native.preadvNowait(fd, [b], 0.5)).toThrow(RangeError);
    expect(() => native.preadvNowait(fd, [b], 2 ** 64)).toThrow(RangeError);
    expect(() => native.preadvNowait(-1, [b], 0)).toThrow(RangeError);
    expect(() =>
      native.preadvNowait(
        fd,
        Array.from({ length: 1025 }, () => b),
        0,
      ),
    ).toThrow(RangeError);
    expect(
      native.preadvNowait(
        fd,
        Array.from({ length: 1024 }, () => new Uint8Array(1)),
        0,
      ),
    ).toBe(1024);
    const closed = openSync(dir.file('disk.img'), 'r');
    closeSync(closed);
    expect(() => native.preadvNowait(closed, [b], 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    // Not seekable: pread on a pipe/socket is ESPIPE.
    const [s1, s2] = native.socketpair();
    try {
      expect(() => native.preadvNowait(s1, [b], 0)).toThrow(expect.objectContaining({ code: 'ESPIPE' }));
    } finally {
      native.closeFd(s1);
      native.closeFd(s2);
    }
  });
});
