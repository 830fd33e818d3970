/** ScatterGather over a real DmaSpace whose range is a memfd mapped by both sides. */
import { describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import { DmaSpace, ScatterGather } from '../../server/dma/index.js';
import { silentLogger } from '../../server/log.js';
import { DmaMapFlag } from '../../protocol/constants.js';
import { listOpenFds } from '../helpers/fds.js';

describe('ScatterGather', () => {
  it('gathers and scatters across segments of guest memory', async () => {
    const before = listOpenFds();
    const fd = native.memfdCreate('sg-guest', 0x4000);
    const guest = native.mmapFd(fd, 0, 0x4000, native.PROT_READ | native.PROT_WRITE);
    const bytes = new Uint8Array(guest.buffers[0]!);
    const dma = new DmaSpace(silentLogger);
    await dma.map({
      flags: DmaMapFlag.READ | DmaMapFlag.WRITE,
      offset: 0n,
      addr: 0x10000n,
      size: 0x4000n,
      fd: native.dupFd(fd),
    });

    const sg = new ScatterGather([
      { addr: 0x10100n, length: 3 },
      { addr: 0x12000n, length: 0 },
      { addr: 0x13000n, length: 5 },
    ]);
    expect(sg.length).toBe(8);
    expect(sg.entries).toHaveLength(2);
    await sg.write(dma, new Uint8Array([1, 2, 3, 4, 5, 6]));
    expect([...bytes.subarray(0x100, 0x103)]).toEqual([1, 2, 3]);
    expect([...bytes.subarray(0x3000, 0x3005)]).toEqual([4, 5, 6, 0, 0]);
    bytes[0x3004] = 9;
    expect([...(await sg.read(dma))]).toEqual([1, 2, 3, 4, 5, 6, 0, 9]);
    const mid = sg.slice(2, 3);
    expect(mid.entries).toEqual([
      { addr: 0x10102n, length: 1 },
      { addr: 0x13000n, length: 2 },
    ]);
    expect([...(await mid.read(dma))]).toEqual([3, 4, 5]);
    await expect(sg.write(dma, new Uint8Array(9))).rejects.toThrow(RangeError);
    await expect(new ScatterGather([{ addr: 0x90000n, length: 4 }]).read(dma)).rejects.toThrow();
    expect(() => new ScatterGather([{ addr: 0n, length: -1 }])).toThrow(RangeError);

    await dma.detach();
    guest.unmap();
    native.closeFd(fd);
    expect(listOpenFds()).toEqual(before);
  });
});
