import { readFileSync } from 'node:fs';
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
  constructor(
    readonly base: bigint,
    readonly mem: Uint8Array,
  ) {}
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
    // Across the two regions: no pin (copy instead), and nothing stays held.
    expect(dma.pin([{ addr: 0x10ff8n, length: 16 }])).toBeUndefined();
    const pin = dma.pin([{ addr: 0x10ff8n, length: 8 }])!;
    expect([...pin.views[0]!]).toEqual([42, 2, 3, 4, 5, 6, 7, 8]);
    pin.release();
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
    await expect(dma.map({ flags: 1, offset: 0n, addr: 0x1800n, size: 0x1000n })).rejects.toMatchObject({
      errno: Errno.EINVAL,
    });
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
    await expect(dma.map({ flags: 3, offset: 0n, addr: 0x800n, size: 0x1000n, fd: fd2 })).rejects.toBeInstanceOf(
      DmaError,
    );
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
    await expect(dma.map({ flags: 3, offset: 0n, addr: 0x10000n, size: 0x2000n, fd: small })).rejects.toMatchObject({
      errno: Errno.EINVAL,
    });
    // Unsealed: accepted by default (QEMU's memory-backend-file cannot seal)...
    await dma.map({ flags: 3, offset: 0n, addr: 0x10000n, size: 0x1000n, fd: native.memfdCreate('plain', 0x1000) });
    // ...refused with unsealedFds 'refuse'; a memfd sealed against shrinking is accepted.
    const strict = new DmaSpace(silentLogger, { unsealedFds: 'refuse' });
    await expect(
      strict.map({ flags: 3, offset: 0n, addr: 0x10000n, size: 0x1000n, fd: native.memfdCreate('plain', 0x1000) }),
    ).rejects.toMatchObject({ errno: Errno.EPERM });
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
    await dma.map({
      flags: 3,
      offset: 0n,
      addr: 0x30000n,
      size: 0x1000n,
      fd: native.memfdCreate('sealed', 0x1000, native.F_SEAL_SHRINK),
    });
    expect(dma.regions[1]!.mapping).toBeDefined();
    await dma.detach();
  });
});

describe('DmaSpace bounds (what a client can make us hold)', () => {
  const mapsOfProcess = (): number => readFileSync('/proc/self/maps', 'utf8').split('\n').length;

  it('at most 65535 maps: the next DMA_MAP is EINVAL', { timeout: 60_000 }, async () => {
    const dma = space();
    for (let i = 0; i < 65535; i++) await dma.map({ flags: 3, offset: 0n, addr: BigInt(i) * 0x1000n, size: 0x1000n });
    await expect(dma.map({ flags: 3, offset: 0n, addr: 0x10000000n, size: 0x1000n })).rejects.toMatchObject({
      errno: Errno.EINVAL,
    });
    await dma.detach();
    expect(dma.regions.length).toBe(0);
  });

  it(
    'mmaps at most 16384 ranges at once (a process has 65530 kernel mappings): the rest are served by messages',
    { timeout: 60_000 },
    async () => {
      const dma = space();
      const last = BigInt(16384 + 15) * 0x1000n;
      const port = new MemoryPort(last, new Uint8Array(0x1000));
      dma.attach(port);
      const ram = native.memfdCreate('ram', 0x1000, native.F_SEAL_SHRINK);
      const before = mapsOfProcess();
      for (let i = 0; i < 16384 + 16; i++)
        await dma.map({ flags: 3, offset: 0n, addr: BigInt(i) * 0x1000n, size: 0x1000n, fd: native.dupFd(ram) });
      native.closeFd(ram);
      const mapped = dma.regions.filter((r) => r.mapping !== undefined).length;
      expect(mapped).toBe(16384);
      expect(dma.regions.at(-1)!.mapping).toBeUndefined();
      expect(mapsOfProcess() - before).toBeLessThan(16384 + 256);
      // A range beyond the budget still works, through the client.
      await dma.write(last, new Uint8Array([9]));
      expect(port.mem[0]).toBe(9);
      expect((await dma.read(0n, 1))[0]).toBe(0);
      await dma.detach();
    },
  );

  it('mmaps at most maxMappedBytes at once; an unmap makes room again', async () => {
    const dma = new DmaSpace(silentLogger, { maxMappedBytes: 0x3000n });
    dma.attach(new MemoryPort(0n, new Uint8Array(0x2000)));
    const fd = (): number => native.memfdCreate('ram', 0x2000, native.F_SEAL_SHRINK);
    await dma.map({ flags: 3, offset: 0n, addr: 0x10000n, size: 0x2000n, fd: fd() });
    await dma.map({ flags: 3, offset: 0n, addr: 0x20000n, size: 0x2000n, fd: fd() });
    expect(dma.regions.map((r) => r.mapping !== undefined)).toEqual([true, false]);
    await dma.unmap(0x10000n, 0x2000n);
    await dma.map({ flags: 3, offset: 0n, addr: 0x30000n, size: 0x2000n, fd: fd() });
    expect(dma.regions.map((r) => r.mapping !== undefined)).toEqual([false, true]);
    await dma.detach();
  });
});

describe('DmaSpace.pin', () => {
  /** A space with an fd-backed read-write range at 0x10000 (3 pages), a read-only one at 0x20000 and a message-only one at 0x30000. */
  async function spaceWithMaps(): Promise<{ dma: DmaSpace; port: MemoryPort }> {
    const dma = space();
    const port = new MemoryPort(0x30000n, new Uint8Array(0x1000));
    dma.attach(port);
    await dma.map({ flags: 3, offset: 0n, addr: 0x10000n, size: 0x3000n, fd: native.memfdCreate('rw', 0x3000) });
    await dma.map({ flags: 1, offset: 0n, addr: 0x20000n, size: 0x1000n, fd: native.memfdCreate('ro', 0x1000) });
    await dma.map({ flags: 3, offset: 0n, addr: 0x30000n, size: 0x1000n });
    return { dma, port };
  }

  /** Whether unmap(addr, size) finishes within a few event-loop turns (false: it waits for a pin or hold). */
  async function unmapsAtOnce(
    dma: DmaSpace,
    addr: bigint,
    size: bigint,
  ): Promise<{ done: boolean; unmapped: Promise<void> }> {
    let done = false;
    const unmapped = dma.unmap(addr, size).then(() => {
      done = true;
    });
    await new Promise((r) => setTimeout(r, 20));
    return { done, unmapped };
  }

  it('gives views of guest memory, one per range in order, that an unmap waits for until release', async () => {
    const { dma } = await spaceWithMaps();
    await dma.write(
      0x10000n,
      new Uint8Array(0x3000).map((_, i) => i & 0xff),
    );
    const pin = dma.pin([
      { addr: 0x12010n, length: 4 },
      { addr: 0x10000n, length: 3 },
      { addr: 0x11ffen, length: 4 },
    ])!;
    expect(pin.views.map((v) => [...v])).toEqual([
      [0x10, 0x11, 0x12, 0x13],
      [0, 1, 2],
      [0xfe, 0xff, 0, 1],
    ]);
    pin.views[1]!.set([7, 8, 9]); // zero-copy: lands in guest memory
    expect([...(await dma.read(0x10000n, 3))]).toEqual([7, 8, 9]);
    const { done, unmapped } = await unmapsAtOnce(dma, 0x10000n, 0x3000n);
    expect(done).toBe(false); // held by the pin
    expect(pin.views[0]!.byteLength).toBe(4); // still mapped meanwhile
    pin.release();
    pin.release(); // idempotent
    await unmapped;
    expect(pin.views[0]!.byteLength).toBe(0); // detached once unmapped
    await dma.detach();
  });

  it('answers undefined where only copying works (message-only memory, a range across two maps), holding nothing', async () => {
    const { dma } = await spaceWithMaps();
    await dma.map({ flags: 3, offset: 0n, addr: 0x13000n, size: 0x1000n, fd: native.memfdCreate('next', 0x1000) });
    expect(
      dma.pin([
        { addr: 0x10000n, length: 8 },
        { addr: 0x30000n, length: 8 },
      ]),
    ).toBeUndefined();
    expect(dma.pin([{ addr: 0x12ff0n, length: 0x20 }])).toBeUndefined();
    expect((await unmapsAtOnce(dma, 0x10000n, 0x3000n)).done).toBe(true);
    await dma.detach();
  });

  it('answers undefined for unmapped memory and a read-only map pinned read-write (the copy then says why), holding nothing', async () => {
    const { dma } = await spaceWithMaps();
    const ok = { addr: 0x10000n, length: 8 };
    expect(dma.pin([ok, { addr: 0x50000n, length: 8 }])).toBeUndefined();
    await expect(dma.read(0x50000n, 8)).rejects.toMatchObject({ errno: Errno.EFAULT });
    expect(dma.pin([ok, { addr: 0x20000n, length: 8 }])).toBeUndefined();
    await expect(dma.write(0x20000n, new Uint8Array(8))).rejects.toMatchObject({ errno: Errno.EPERM });
    const ro = dma.pin([{ addr: 0x20000n, length: 8 }], 'read')!;
    expect(ro.views[0]!.byteLength).toBe(8);
    ro.release();
    expect(dma.pin([])!.views).toEqual([]);
    expect((await unmapsAtOnce(dma, 0x10000n, 0x3000n)).done).toBe(true);
    await dma.detach();
  });

  it('throws EINVAL for a malformed range, holding nothing', async () => {
    const { dma } = await spaceWithMaps();
    const ok = { addr: 0x10000n, length: 8 };
    expect(() => dma.pin([ok, { addr: 0x10000n, length: -1 }])).toThrow(
      expect.objectContaining({ errno: Errno.EINVAL }),
    );
    expect(() => dma.pin([ok, { addr: -1n, length: 1 }])).toThrow(DmaError);
    expect(() => dma.pin([ok, { addr: 0x10000n, length: 0.5 }])).toThrow(
      expect.objectContaining({ errno: Errno.EINVAL }),
    );
    expect((await unmapsAtOnce(dma, 0x10000n, 0x3000n)).done).toBe(true);
    await dma.detach();
  });
});

describe('DmaSpace map and unmap listeners', () => {
  it('tell a device about every map and unmap (not an identical re-map), before the unmap waits for its pins', async () => {
    const dma = space();
    const events: string[] = [];
    let pin: ReturnType<DmaSpace['pin']>;
    const offMap = dma.onMap((r) =>
      events.push(
        `map 0x${r.addr.toString(16)}+0x${r.size.toString(16)} ${r.mapping ? 'fd' : 'messages'} ${r.writable ? 'rw' : 'ro'}`,
      ),
    );
    dma.onUnmap((r) => {
      events.push(`unmap 0x${r.addr.toString(16)} found=${dma.find(r.addr) !== undefined}`);
      pin?.release(); // a device drops its references here; the unmap then completes
    });
    await dma.map({ flags: 3, offset: 0n, addr: 0x1000n, size: 0x1000n, fd: native.memfdCreate('a', 0x1000) });
    await dma.map({ flags: 1, offset: 0n, addr: 0x4000n, size: 0x2000n });
    await dma.map({ flags: 1, offset: 0n, addr: 0x4000n, size: 0x2000n }); // identical: no news
    await expect(dma.map({ flags: 1, offset: 0n, addr: 0x4800n, size: 0x1000n })).rejects.toMatchObject({
      errno: Errno.EINVAL,
    });
    pin = dma.pin([{ addr: 0x1000n, length: 16 }]);
    expect(pin).toBeDefined();
    await dma.unmap(0x1000n, 0x1000n); // would wait forever if the listener ran after the drain
    offMap();
    await dma.map({ flags: 3, offset: 0n, addr: 0x8000n, size: 0x1000n });
    await dma.detach();
    expect(events).toEqual([
      'map 0x1000+0x1000 fd rw',
      'map 0x4000+0x2000 messages ro',
      'unmap 0x1000 found=false',
      'unmap 0x4000 found=false',
      'unmap 0x8000 found=false',
    ]);
  });

  it('keep the map when a listener throws, and stop calling a removed listener', async () => {
    const dma = space();
    let calls = 0;
    const off = dma.onMap(() => {
      calls++;
      throw new Error('device bug');
    });
    await dma.map({ flags: 3, offset: 0n, addr: 0x1000n, size: 0x1000n });
    expect(dma.find(0x1000n)).toBeDefined();
    off();
    off(); // idempotent
    await dma.map({ flags: 3, offset: 0n, addr: 0x2000n, size: 0x1000n });
    expect(calls).toBe(1);
    await dma.detach();
  });
});
