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

  it('preads from and pwrites to an fd on the threadpool', async () => {
    const guestFd = native.memfdCreate('guest', 4096);
    const m = native.mmapFd(guestFd, 0, 4096, RW);
    native.closeFd(guestFd);
    const file = native.memfdCreate('disk', 65536);
    writeSync(file, Buffer.from('hello, guest'), 0, 12, 512);

    await expect(m.pread(file, 512, 100, 12)).resolves.toBe(12);
    expect(Buffer.from(m.buffers[0]!, 100, 12).toString()).toBe('hello, guest');
    await expect(m.pread(file, 65536 - 4, 0, 16)).resolves.toBe(4); // stops at EOF

    Buffer.from(m.buffers[0]!).write('from guest', 2000);
    await expect(m.pwrite(file, 1024, 2000, 10)).resolves.toBe(10);
    const out = Buffer.alloc(10);
    readSync(file, out, 0, 10, 1024);
    expect(out.toString()).toBe('from guest');

    await expect(m.pread(file, 0, 4000, 200)).rejects.toThrow(RangeError);
    await expect(m.pread(999_999, 0, 0, 4)).rejects.toMatchObject({ code: 'EBADF' });

    // unmap while I/O is in flight: views detach now, the memory stays until it finishes.
    const pending = m.pread(file, 0, 0, 4096);
    expect(m.inflight).toBe(1);
    m.unmap();
    expect(m.buffers[0]!.byteLength).toBe(0);
    await expect(pending).resolves.toBe(4096);
    expect(m.inflight).toBe(0);
    await expect(m.pwrite(file, 0, 0, 4)).rejects.toMatchObject({ code: 'EFAULT' });
    native.closeFd(file);
  });

  it('rejects pread into a read-only mapping', async () => {
    const fd = native.memfdCreate('ro', 4096);
    const m = native.mmapFd(fd, 0, 4096, native.PROT_READ);
    await expect(m.pread(fd, 0, 0, 4)).rejects.toMatchObject({ code: 'EACCES' });
    await expect(m.pwrite(fd, 0, 0, 4)).resolves.toBe(4);
    m.unmap();
    native.closeFd(fd);
  });
});
