import { describe, expect, it } from 'vitest';
import { readSync, writeSync } from 'node:fs';
import { native } from '../../native/index.js';
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';

noFdLeakEachTest();

const RW = native.PROT_READ | native.PROT_WRITE;

describe('native mmap', () => {
  it('maps a memfd: writes through a view are seen through the fd', () => {
    const fd = native.memfdCreate('guest', 8192);
    const m = native.mmapFd(fd, 0, 8192, RW);
    native.closeFd(fd); // the mapping outlives the fd
    expect(m.length).toBe(8192);
    expect(m.mapped).toBe(true);
    expect(m.buffers).toHaveLength(1);
    expect(m.buffers[0]!.byteLength).toBe(8192);

    const fd2 = native.memfdCreate('guest2', 8192);
    const m2 = native.mmapFd(fd2, 4096, 4096, RW);
    new Uint8Array(m2.buffers[0]!).set([1, 2, 3, 4], 10);
    const out = Buffer.alloc(4);
    expect(readSync(fd2, out, 0, 4, 4096 + 10)).toBe(4);
    expect([...out]).toEqual([1, 2, 3, 4]);
    writeSync(fd2, Buffer.from([9, 8]), 0, 2, 4096);
    expect([...new Uint8Array(m2.buffers[0]!, 0, 2)]).toEqual([9, 8]);
    m.unmap();
    m2.unmap();
    native.closeFd(fd2);
  });

  it('unmap detaches every view without crashing', () => {
    const fd = native.memfdCreate('detach', 4096);
    const m = native.mmapFd(fd, 0, 4096, RW);
    native.closeFd(fd);
    const ab = m.buffers[0]!;
    const bytes = new Uint8Array(ab);
    const dv = new DataView(ab);
    const buf = Buffer.from(ab, 16, 32);
    bytes[0] = 42;
    m.unmap();
    m.unmap(); // idempotent
    expect(m.mapped).toBe(false);
    expect(ab.byteLength).toBe(0);
    expect(bytes.length).toBe(0);
    expect(bytes[0]).toBeUndefined();
    expect(buf.length).toBe(0);
    expect(() => dv.getUint8(0)).toThrow(TypeError);
    expect(() => new Uint8Array(ab, 0, 1)).toThrow();
    bytes[0] = 1; // ignored, not a crash
  });

  it('refuses ranges past the end of the file and unaligned offsets', () => {
    const fd = native.memfdCreate('short', 4096);
    expect(() => native.mmapFd(fd, 0, 8192, RW)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => native.mmapFd(fd, 100, 1000, RW)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => native.mmapFd(fd, 0, 0, RW)).toThrow(RangeError);
    expect(() => native.mmapFd(999_999, 0, 4096, RW)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    native.closeFd(fd);
  });

  it('splits mappings larger than WINDOW_SIZE into windows', () => {
    expect(native.WINDOW_SIZE).toBe(2 ** 32);
    const size = 2 ** 32 + 2 ** 20;
    const fd = native.memfdCreate('huge', size); // sparse: nothing is touched but two pages
    const m = native.mmapFd(fd, 0, size, RW);
    native.closeFd(fd);
    expect(m.buffers.map((b) => b.byteLength)).toEqual([2 ** 32, 2 ** 20]);
    new Uint8Array(m.buffers[1]!)[0] = 7;
    expect(new Uint8Array(m.buffers[0]!)[0]).toBe(0);
    m.unmap();
    expect(m.buffers.every((b) => b.byteLength === 0)).toBe(true);
  });
});
