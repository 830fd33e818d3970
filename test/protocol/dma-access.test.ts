/**
 * DMA_READ (11) and DMA_WRITE (12), server to client: the codec (spec layout),
 * and device DMA through both paths: memfd-backed maps (the server mmaps the
 * fd) and fd-less maps (the server sends DMA_READ/DMA_WRITE, the client
 * answers from its own bytes), including transfers larger than
 * max_data_xfer_size.
 */
import { describe, expect, it } from 'vitest';
import * as P from '../../protocol/index.js';
import { VfioUserCommand, DmaMapFlag, Errno, PciIrq, PciRegion } from '../../protocol/constants.js';
import { deviceEachTest } from '../helpers/per-test.js';
import { DEVICE_KINDS, type RunningDevice } from '../helpers/harness.js';
import { Reg } from '../helpers/test-device.js';
import type { VfioUserClient } from '../../client/index.js';

describe('codec', () => {
  it('DMA_READ / DMA_WRITE use the spec layout (data at byte 32)', () => {
    const req = P.encodeDmaReadRequest(1, 0x2000n, 64);
    expect(req.byteLength).toBe(32);
    expect(P.decodeDmaReadRequest(req)).toEqual({ addr: 0x2000n, count: 64n });
    const data = new Uint8Array(64).map((_, i) => i);
    const rep = P.encodeDmaReadReply(1, 0x2000n, data);
    expect(rep[32]).toBe(0);
    expect(rep[33]).toBe(1);
    expect([...P.decodeDmaReadReply(rep).data]).toEqual([...data]);
    const w = P.encodeDmaWriteRequest(2, 0x3000n, data);
    expect(P.decodeDmaWriteRequest(w)).toMatchObject({ addr: 0x3000n, count: 64n });
    expect(P.encodeDmaWriteReply(2, 0x3000n, 64).byteLength).toBe(32);
    expect(P.decodeDmaWriteReply(P.encodeDmaWriteReply(2, 0x3000n, 64))).toEqual({ addr: 0x3000n, count: 64n });
    expect(P.decodeDmaWriteReply(P.encodeEmptyReply(2, VfioUserCommand.DMA_WRITE))).toEqual({});
  });
});

let run: RunningDevice;

async function w32(c: VfioUserClient, reg: number, v: number): Promise<void> {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  await c.regionWrite(PciRegion.BAR0, reg, b);
}

async function r32(c: VfioUserClient, reg: number): Promise<number> {
  const b = await c.regionRead(PciRegion.BAR0, reg, 4);
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
}

/** Program the device's copy engine and wait for its completion interrupt; returns STATUS. */
async function copy(c: VfioUserClient, src: bigint, dst: bigint, len: number): Promise<number> {
  await w32(c, Reg.DMA_SRC_LO, Number(src & 0xffffffffn));
  await w32(c, Reg.DMA_SRC_HI, Number(src >> 32n));
  await w32(c, Reg.DMA_DST_LO, Number(dst & 0xffffffffn));
  await w32(c, Reg.DMA_DST_HI, Number(dst >> 32n));
  await w32(c, Reg.DMA_LEN, len);
  await w32(c, Reg.DOORBELL, 1);
  await c.waitForIrq(PciIrq.MSIX, 0, 10_000);
  return r32(c, Reg.STATUS);
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

describe.each(DEVICE_KINDS)('%s', (_kind, make) => {
  deviceEachTest((started) => {
    run = started;
  }, make);

  describe('device DMA', () => {
    it('memfd-backed: the device reads and writes the shared memory directly', async () => {
      const c = await run.connect();
      await c.enableIrqs(PciIrq.MSIX, 1);
      const mem = c.createGuestMemory(0x10000);
      mem.write(0x1000, pattern(0x2000, 1));
      await c.dmaMap({ addr: 0x100000n, backing: mem });
      expect(await copy(c, 0x101000n, 0x108000n, 0x2000)).toBe(1);
      expect(mem.read(0x8000, 0x2000)).toEqual(pattern(0x2000, 1));
      expect(c.served).toEqual({ dmaRead: 0, dmaWrite: 0, refused: 0 });
    });

    it('fd-less: the device goes through DMA_READ/DMA_WRITE messages', async () => {
      const c = await run.connect();
      await c.enableIrqs(PciIrq.MSIX, 1);
      const src = pattern(0x3000, 7);
      await c.dmaMap({ addr: 0x200000n, backing: src });
      const dst = await c.dmaMap({ addr: 0x300000n, size: 0x3000n });
      expect(await copy(c, 0x200000n, 0x300000n, 0x3000)).toBe(1);
      expect(dst.bytes).toEqual(src);
      expect(c.served.dmaRead).toBeGreaterThanOrEqual(1);
      expect(c.served.dmaWrite).toBeGreaterThanOrEqual(1);
    });

    it('fd-less transfers larger than the client max_data_xfer_size are chunked', async () => {
      const c = await run.connect({ capabilities: { maxDataXferSize: 4096 } });
      await c.enableIrqs(PciIrq.MSIX, 1);
      const src = pattern(0x10000, 3);
      await c.dmaMap({ addr: 0x400000n, backing: src });
      const dst = await c.dmaMap({ addr: 0x500000n, size: 0x10000n });
      expect(await copy(c, 0x400000n, 0x500000n, 0x10000)).toBe(1);
      expect(dst.bytes).toEqual(src);
      expect(c.served.dmaRead).toBeGreaterThanOrEqual(16);
      expect(c.served.dmaWrite).toBeGreaterThanOrEqual(16);
      expect(c.served.refused).toBe(0);
    });

    it('mixed: memfd source, message destination, while client requests keep flowing', async () => {
      const c = await run.connect();
      await c.enableIrqs(PciIrq.MSIX, 1);
      const mem = c.createGuestMemory(0x4000);
      mem.write(0, pattern(0x4000, 9));
      await c.dmaMap({ addr: 0x600000n, backing: mem });
      const dst = await c.dmaMap({ addr: 0x700000n, size: 0x4000n });
      const job = copy(c, 0x600000n, 0x700000n, 0x4000);
      const reads = Array.from({ length: 20 }, () => c.cfg16(0));
      expect(await job).toBe(1);
      await Promise.all(reads);
      expect(dst.bytes).toEqual(pattern(0x4000, 9));
    });

    it('a DMA_WRITE into a read-only map is refused by the client (EPERM reaches the device)', async () => {
      const c = await run.connect();
      await c.enableIrqs(PciIrq.MSIX, 1);
      await c.dmaMap({ addr: 0x800000n, backing: pattern(0x1000, 1) });
      await c.dmaMap({ addr: 0x900000n, size: 0x1000n, flags: DmaMapFlag.READ });
      const status = await copy(c, 0x800000n, 0x900000n, 0x100);
      expect(status & 0x80000000).not.toBe(0);
      expect(status & 0xffff).toBe(Errno.EPERM);
    });

    it('DMA to an unmapped address fails in the device, the connection lives on', async () => {
      const c = await run.connect();
      await c.enableIrqs(PciIrq.MSIX, 1);
      const status = await copy(c, 0xdead0000n, 0xbeef0000n, 0x10);
      expect(status & 0x80000000).not.toBe(0);
      expect(await c.cfg16(0)).toBeGreaterThan(0);
    });
  });
});
