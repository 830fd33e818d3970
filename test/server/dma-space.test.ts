import { describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import type { ClientPort } from '../../server/endpoint.js';
import { DmaError, DmaSpace } from '../../server/dma/index.js';
import { Errno } from '../../protocol/index.js';
import { silentLogger } from '../../server/log.js';

/** A client port backed by an in-memory array (what a vfio-user client would serve by DMA_READ/WRITE). */
class MemoryPort implements ClientPort {
  readonly log = silentLogger;
  readonly maxDataXferSize = 1 << 20;
  constructor(readonly base: bigint, readonly mem: Uint8Array) {}
  async dmaRead(addr: bigint, length: number): Promise<Uint8Array> {
    const at = Number(addr - this.base);
    return this.mem.slice(at, at + length);
  }
  async dmaWrite(addr: bigint, data: Uint8Array): Promise<void> {
    this.mem.set(data, Number(addr - this.base));
  }
}

function space(): DmaSpace {
  return new DmaSpace(silentLogger);
}

describe('DmaSpace', () => {
  it('reads and writes across an fd-backed and a message-only region', async () => {
    const dma = space();
    const fd = native.memfdCreate('ram', 0x2000);
    await dma.map({ flags: 3, offset: 0x1000n, addr: 0x10000n, size: 0x1000n, fd });
    const port = new MemoryPort(0x11000n, new Uint8Array(0x1000));
    dma.attach(port);
    await dma.map({ flags: 3, offset: 0n, addr: 0x11000n, size: 0x1000n });
    const data = new Uint8Array(16).map((_, i) => i + 1);
    await dma.write(0x10ff8n, data);
    expect([...port.mem.subarray(0, 8)]).toEqual([9, 10, 11, 12, 13, 14, 15, 16]);
    expect([...(await dma.read(0x10ff8n, 16))]).toEqual([...data]);
    const v = dma.view(0x10ff8n, 8);
    expect([...v]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    v[0] = 42;
    expect((await dma.read(0x10ff8n, 1))[0]).toBe(42);
    expect(dma.sgl(0x10ff8n, 16).map((s) => [s.gpa, s.length, s.mapped])).toEqual([[0x10ff8n, 8, true], [0x11000n, 8, false]]);
    expect(() => dma.view(0x10ff8n, 16)).toThrow(DmaError);
    expect(() => dma.view(0x11000n, 4)).toThrow(DmaError);
    await expect(dma.read(0x12000n, 1)).rejects.toMatchObject({ errno: Errno.EFAULT });
    await dma.detach();
    expect(v.byteLength).toBe(0); // detached
    expect(dma.regions.length).toBe(0);
  });

  it('respects protection, overlaps, re-maps and unmap rules', async () => {
    const dma = space();
    await dma.map({ flags: 1, offset: 0n, addr: 0x1000n, size: 0x1000n });
    await dma.map({ flags: 1, offset: 0n, addr: 0x1000n, size: 0x1000n });
    await expect(dma.map({ flags: 1, offset: 0n, addr: 0x1800n, size: 0x1000n })).rejects.toMatchObject({ errno: Errno.EINVAL });
    await expect(dma.write(0x1000n, new Uint8Array(1))).rejects.toMatchObject({ errno: Errno.EPERM });
    await expect(dma.read(0x1000n, 1)).rejects.toMatchObject({ errno: Errno.ENOTCONN });
    await expect(dma.unmap(0x1000n, 0x800n)).rejects.toMatchObject({ errno: Errno.ENOENT });
    await dma.unmap(0x1000n, 0x1000n);
    expect(dma.regions.length).toBe(0);
  });

  it('closes the fd after mapping and on failure', async () => {
    const dma = space();
    const fd = native.memfdCreate('ram', 0x1000);
    await dma.map({ flags: 3, offset: 0n, addr: 0n, size: 0x1000n, fd });
    expect(() => native.closeFd(fd)).toThrow();
    const fd2 = native.memfdCreate('ram', 0x1000);
    await expect(dma.map({ flags: 3, offset: 0n, addr: 0x800n, size: 0x1000n, fd: fd2 })).rejects.toBeInstanceOf(DmaError);
    expect(() => native.closeFd(fd2)).toThrow();
    await dma.detach();
  });

  it('unmap waits for holds on the range', async () => {
    const dma = space();
    const fd = native.memfdCreate('ram', 0x1000);
    await dma.map({ flags: 3, offset: 0n, addr: 0x1000n, size: 0x1000n, fd });
    const hold = dma.hold(0x1000n, 16);
    let unmapped = false;
    const p = dma.unmap(0x1000n, 0x1000n).then(() => (unmapped = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(unmapped).toBe(false);
    expect(() => dma.hold(0x1000n, 1)).toThrow(DmaError); // no new users
    hold.release();
    await p;
    expect(unmapped).toBe(true);
  });

  it('quiesce waits for in-flight holds and keeps the maps', async () => {
    const dma = space();
    await dma.map({ flags: 3, offset: 0n, addr: 0x1000n, size: 0x1000n });
    const hold = dma.hold(0x1000n, 4);
    let quiet = false;
    const q = dma.quiesce().then(() => (quiet = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(quiet).toBe(false);
    hold.release();
    await q;
    expect(dma.regions.length).toBe(1);
  });

  it('message-only ranges unmap without waiting; a transfer across an unmapped range fails with EFAULT', async () => {
    const dma = space();
    let release!: () => void;
    const port: ClientPort = {
      log: silentLogger,
      maxDataXferSize: 1 << 20,
      dmaRead: (_a, n) => new Promise((resolve) => (release = () => resolve(new Uint8Array(n)))),
      dmaWrite: async () => {},
    };
    dma.attach(port);
    await dma.map({ flags: 3, offset: 0n, addr: 0x1000n, size: 0x1000n });
    await dma.map({ flags: 3, offset: 0n, addr: 0x2000n, size: 0x1000n });
    const hold = dma.hold(0x1000n, 1);
    const read = dma.read(0x1ff0n, 0x20); // waits on the first message
    await dma.unmap(0x1000n, 0x1000n); // does not wait for the hold or the read
    await dma.unmap(0x2000n, 0x1000n);
    release();
    await expect(read).rejects.toMatchObject({ errno: Errno.EFAULT });
    hold.release();
  });

  it('refuses an fd smaller than the mapped extent, and unsealed fds when asked to', async () => {
    const dma = space();
    const small = native.memfdCreate('small', 0x1000);
    await expect(dma.map({ flags: 3, offset: 0n, addr: 0x10000n, size: 0x2000n, fd: small })).rejects.toMatchObject({ errno: Errno.EINVAL });
    // Unsealed: accepted by default (QEMU's memory-backend-file cannot seal)...
    await dma.map({ flags: 3, offset: 0n, addr: 0x10000n, size: 0x1000n, fd: native.memfdCreate('plain', 0x1000) });
    // ...refused with unsealedFds 'refuse'; a memfd sealed against shrinking is accepted.
    const strict = new DmaSpace(silentLogger, { unsealedFds: 'refuse' });
    await expect(strict.map({ flags: 3, offset: 0n, addr: 0x10000n, size: 0x1000n, fd: native.memfdCreate('plain', 0x1000) }))
      .rejects.toMatchObject({ errno: Errno.EPERM });
    const sealedFd = native.memfdCreate('sealed', 0x1000, native.F_SEAL_SHRINK | native.F_SEAL_GROW);
    expect(native.fdSeals(sealedFd) & native.F_SEAL_SHRINK).toBe(native.F_SEAL_SHRINK);
    await strict.map({ flags: 3, offset: 0n, addr: 0x10000n, size: 0x1000n, fd: sealedFd });
    expect(strict.view(0x10000n, 4).byteLength).toBe(4);
    await dma.detach();
    await strict.detach();
  });

  it("serves an unsealed fd's range by messages with unsealedFds 'messages'", async () => {
    const dma = new DmaSpace(silentLogger, { unsealedFds: 'messages' });
    const port = new MemoryPort(0x20000n, new Uint8Array(0x1000));
    dma.attach(port);
    await dma.map({ flags: 3, offset: 0n, addr: 0x20000n, size: 0x1000n, fd: native.memfdCreate('plain', 0x1000) });
    expect(dma.regions[0]!.mapping).toBeUndefined();
    await dma.write(0x20010n, new Uint8Array([1, 2, 3]));
    expect([...port.mem.subarray(0x10, 0x13)]).toEqual([1, 2, 3]);
    // A sealed one is still mapped.
    await dma.map({ flags: 3, offset: 0n, addr: 0x30000n, size: 0x1000n, fd: native.memfdCreate('sealed', 0x1000, native.F_SEAL_SHRINK) });
    expect(dma.regions[1]!.mapping).toBeDefined();
    await dma.detach();
  });
});
