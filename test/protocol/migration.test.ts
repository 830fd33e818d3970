/**
 * MIG_DATA_READ (17) and MIG_DATA_WRITE (18) over a real socket: the codec;
 * EINVAL from a device that cannot migrate; the end-of-data rule and
 * libvfio-user's padding; the errno of every bad input; the commands a
 * stopped device refuses; what STOP means (no DMA, no interrupts, both
 * catching up on resume); a device that owns its stream byte for byte; and
 * hostile MIG_DATA_WRITE streams, refused with the device unchanged.
 */
import { describe, expect, it } from 'vitest';
import * as P from '../../protocol/index.js';
import { VfioUserCommand, Errno, HEADER_SIZE, IrqSetFlag, PciIrq, PciRegion } from '../../protocol/constants.js';
import { connectedEachTest, deviceEachTest } from '../helpers/per-test.js';
import { expectAlive, expectErrno, expectErrorReply, fields, rawRequest, startDevice } from '../helpers/harness.js';
import { PciTestDevice } from '../helpers/pci-test-device.js';
import { Reg } from '../helpers/test-device.js';
import { mulberry32 } from '../helpers/random.js';
import { fdBaseline } from '../helpers/fds.js';
import { crc32c } from '../../server/state/crc32c.js';
import { PciDevice } from '../../server/pci/index.js';
import type { MigrationDataStream } from '../../server/migration/device-migration.js';
import type { VfioUserClient } from '../../client/index.js';

const S = P.MigrationState;

/** The little-endian u32 at the start of `b` (a view into a reply: mind its offset). */
function u32(b: Uint8Array): number {
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
}

describe('codec', () => {
  it('MIG_DATA_READ / MIG_DATA_WRITE round-trip; a padded reply decodes to its size', () => {
    expect(P.decodeMigDataReadRequest(P.encodeMigDataReadRequest(1, 100))).toEqual({ argsz: 108, size: 100 });
    expect(P.decodeMigDataReadReply(P.encodeMigDataReadReply(1, new Uint8Array(3))).size).toBe(3);
    const padded = P.encodeMigDataReadReply(1, Uint8Array.of(1, 2, 3), 1024);
    expect(padded.byteLength).toBe(HEADER_SIZE + 8 + 1024);
    expect(P.decodeMigDataReadReply(padded)).toMatchObject({ argsz: 11, size: 3, data: Uint8Array.of(1, 2, 3) });
    expect(P.decodeMigDataWriteRequest(P.encodeMigDataWriteRequest(1, new Uint8Array(5))).size).toBe(5);
  });
});

describe('a device that cannot migrate', () => {
  let c: VfioUserClient;
  connectedEachTest((client) => {
    c = client;
  });

  it('a well-formed MIG_DATA_READ or MIG_DATA_WRITE: EINVAL, alive', async () => {
    const read = P.encodeMigDataReadRequest(0, 64).subarray(16);
    expectErrorReply(await rawRequest(c, { command: VfioUserCommand.MIG_DATA_READ }, read), Errno.EINVAL);
    const write = P.encodeMigDataWriteRequest(0, new Uint8Array(8)).subarray(16);
    expectErrorReply(await rawRequest(c, { command: VfioUserCommand.MIG_DATA_WRITE }, write), Errno.EINVAL);
    await expectAlive(c);
  });
});

function migDataRead(c: VfioUserClient, argsz: number, size: number, extra = new Uint8Array(0)) {
  return rawRequest(
    c,
    { command: VfioUserCommand.MIG_DATA_READ },
    new Uint8Array([...fields(['u32', argsz], ['u32', size]), ...extra]),
  );
}
function migDataWrite(c: VfioUserClient, argsz: number, size: number, data: Uint8Array) {
  return rawRequest(
    c,
    { command: VfioUserCommand.MIG_DATA_WRITE },
    new Uint8Array([...fields(['u32', argsz], ['u32', size]), ...data]),
  );
}

describe('a migratable device', () => {
  let c: VfioUserClient;
  let dev: PciTestDevice;
  deviceEachTest(
    async (r) => {
      dev = r.device;
      // The sample client's max_data_xfer_size: 1024.
      c = await r.connect({ capabilities: { maxDataXferSize: 1024 } });
    },
    () => new PciTestDevice('migratable', { migratable: true }),
  );

  const writeReg = (reg: number, value: number) => c.regionWrite(PciRegion.BAR0, reg, fields(['u32', value]));
  const readReg = async (reg: number): Promise<number> => u32(await c.regionRead(PciRegion.BAR0, reg, 4));

  it('STOP_COPY data: chunks of the size asked, the last short, then empty; replies padded to 8 + the size asked', async () => {
    await c.setMigrationState(S.STOP_COPY);
    const chunks: Uint8Array[] = [];
    for (;;) {
      const r = await migDataRead(c, 8 + 1024, 1024);
      expect(r.header.error).toBe(0);
      expect(r.message.byteLength).toBe(HEADER_SIZE + 8 + 1024);
      const m = P.decodeMigDataReadReply(r.message);
      expect(m.argsz).toBe(8 + m.size);
      chunks.push(new Uint8Array(m.data));
      if (m.size < 1024) break;
    }
    const end = P.decodeMigDataReadReply((await migDataRead(c, 8 + 1024, 1024)).message);
    expect(end.size).toBe(0);
    const zero = await migDataRead(c, 8, 0);
    expect(zero.message.byteLength).toBe(HEADER_SIZE + 8);
    const total = chunks.reduce((n, x) => n + x.byteLength, 0);
    expect(new TextDecoder().decode(chunks[0]!.subarray(0, 8))).toBe('VUTSSTAT');
    expect(new DataView(chunks[0]!.buffer).getUint32(12, true)).toBe(total);
  });

  it('PRE_COPY carries no data (the whole state goes at stop-copy); the device runs meanwhile', async () => {
    await c.setMigrationState(S.PRE_COPY);
    expect((await c.readMigrationData(1024)).byteLength).toBe(0);
    await writeReg(Reg.SCRATCH0, 0x77);
    expect(await readReg(Reg.SCRATCH0)).toBe(0x77);
  });

  it("every bad MIG_DATA_READ / MIG_DATA_WRITE gets libvfio-user's errno (EINVAL) and changes nothing", async () => {
    const bad: [string, () => ReturnType<typeof migDataRead>][] = [
      ['READ payload < 8', () => rawRequest(c, { command: VfioUserCommand.MIG_DATA_READ }, new Uint8Array(7))],
      ['READ in RUNNING', () => migDataRead(c, 8 + 64, 64)],
      ['WRITE payload < 8', () => rawRequest(c, { command: VfioUserCommand.MIG_DATA_WRITE }, new Uint8Array(7))],
      ['WRITE in RUNNING', () => migDataWrite(c, 8 + 4, 4, new Uint8Array(4))],
    ];
    for (const [what, send] of bad) {
      const r = await send();
      expect({ what, errno: r.header.error }).toEqual({ what, errno: Errno.EINVAL });
      expectErrorReply(r, Errno.EINVAL);
    }
    await c.setMigrationState(S.STOP_COPY);
    const inStopCopy: [string, () => ReturnType<typeof migDataRead>][] = [
      ['READ size 1025 > the client max', () => migDataRead(c, 8 + 1025, 1025)],
      ['READ argsz < 8 + size', () => migDataRead(c, 8 + 63, 64)],
      [
        'READ with data after the request (libvfio-user: a longer reply)',
        () => migDataRead(c, 8 + 64, 64, new Uint8Array(10)),
      ],
      ['WRITE in STOP_COPY', () => migDataWrite(c, 8 + 4, 4, new Uint8Array(4))],
    ];
    for (const [what, send] of inStopCopy) {
      const r = await send();
      expect({ what, errno: r.header.error }).toEqual({ what, errno: Errno.EINVAL });
    }
    // Nothing was consumed: the stream still starts at its beginning.
    expect(new TextDecoder().decode((await c.readMigrationData(8)).subarray(0, 8))).toBe('VUTSSTAT');
    await c.setMigrationState(S.RESUMING);
    const inResuming: [string, () => ReturnType<typeof migDataRead>][] = [
      ['READ in RESUMING', () => migDataRead(c, 8 + 64, 64)],
      ['WRITE size 1025', () => migDataWrite(c, 8 + 1025, 1025, new Uint8Array(1025))],
      ['WRITE argsz < 8 + size', () => migDataWrite(c, 8 + 3, 4, new Uint8Array(4))],
      ['WRITE fewer data bytes than size', () => migDataWrite(c, 8 + 4, 4, new Uint8Array(3))],
    ];
    for (const [what, send] of inResuming) {
      const r = await send();
      expect({ what, errno: r.header.error }).toEqual({ what, errno: Errno.EINVAL });
    }
    const empty = await migDataWrite(c, 8, 0, new Uint8Array(0));
    expect(empty.header.error).toBe(0);
    expect(empty.message.byteLength).toBe(HEADER_SIZE);
    await expectErrno(c.setMigrationState(S.STOP), Errno.EINVAL); // nothing to load
    expect(await c.migrationState()).toBe(S.RESUMING);
    await expectAlive(c);
  });

  it('a stopped device serves only what libvfio-user serves; RESUMING and PRE_COPY serve everything', async () => {
    const getInfo = () =>
      rawRequest(
        c,
        { command: VfioUserCommand.DEVICE_GET_INFO },
        fields(['u32', 16], ['u32', 0], ['u32', 0], ['u32', 0]),
      );
    const reset = () => rawRequest(c, { command: VfioUserCommand.DEVICE_RESET });
    const unmap = () =>
      rawRequest(c, { command: VfioUserCommand.DMA_UNMAP }, fields(['u32', 24], ['u32', 2], ['u64', 0n], ['u64', 0n]));
    const cfgRead = () =>
      rawRequest(
        c,
        { command: VfioUserCommand.REGION_READ },
        fields(['u64', 0n], ['u32', PciRegion.CONFIG], ['u32', 4]),
      );
    const barWrite = () =>
      rawRequest(
        c,
        { command: VfioUserCommand.REGION_WRITE },
        new Uint8Array([...fields(['u64', 0n], ['u32', PciRegion.BAR0], ['u32', 4]), 1, 0, 0, 0]),
      );
    const setIrqs = () =>
      rawRequest(
        c,
        { command: VfioUserCommand.DEVICE_SET_IRQS },
        fields(
          ['u32', 20],
          ['u32', IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER],
          ['u32', 0],
          ['u32', 0],
          ['u32', 0],
        ),
      );

    await c.setMigrationState(S.STOP);
    for (const send of [getInfo, reset, unmap, setIrqs]) expectErrorReply(await send(), Errno.EINVAL);
    expect((await migDataRead(c, 8 + 16, 16)).header.error).toBe(Errno.EINVAL);
    expect((await cfgRead()).message.byteLength).toBe(HEADER_SIZE + 16 + 4);
    expect((await barWrite()).header.error).toBe(0);

    await c.setMigrationState(S.STOP_COPY);
    for (const send of [getInfo, reset, cfgRead, barWrite]) expectErrorReply(await send(), Errno.EINVAL);
    expect((await migDataWrite(c, 12, 4, new Uint8Array(4))).header.error).toBe(Errno.EINVAL);

    await c.setMigrationState(S.RESUMING);
    expect((await getInfo()).header.error).toBe(0);

    await c.reset(); // allowed in RESUMING: back to RUNNING
    expect(await c.migrationState()).toBe(S.RUNNING);
    await c.setMigrationState(S.PRE_COPY);
    expect((await getInfo()).header.error).toBe(0);
    await c.reset();
    expect(await c.migrationState()).toBe(S.RUNNING);
  });

  it('STOP: the device raises no interrupt and makes no DMA; both happen after RUNNING', async () => {
    await c.enableIrqs(PciIrq.MSIX, 4);
    const mem = c.createGuestMemory(0x2000);
    await c.dmaMap({ addr: 0x100000n, backing: mem });
    mem.write(0, Uint8Array.of(1, 2, 3, 4));
    await c.setMigrationState(S.STOP);

    // A loopback interrupt (the IRQ register) while stopped: it pends.
    await writeReg(Reg.IRQ, 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(c.irqCount(PciIrq.MSIX, 1)).toBe(0);
    expect(dev.irq.isPending(PciIrq.MSIX, 1)).toBe(true);
    // A DMA job while stopped is refused by the library (the device's quiesce should have prevented it).
    await expect(dev.dma.write(0x100000n, Uint8Array.of(9))).rejects.toMatchObject({ errno: Errno.EBUSY });
    expect(mem.read(0, 1)[0]).toBe(1);

    await c.setMigrationState(S.RUNNING);
    expect(await c.waitForIrq(PciIrq.MSIX, 1, 2000)).toBeGreaterThanOrEqual(1);
    await dev.dma.write(0x100000n, Uint8Array.of(9));
    expect(mem.read(0, 1)[0]).toBe(9);
  });

  it('a state change waits for the DMA job in flight (quiesce), and the job is in the saved state', async () => {
    const mem = c.createGuestMemory(0x2000);
    await c.dmaMap({ addr: 0x200000n, backing: mem });
    mem.write(0, new Uint8Array(64).fill(0xab));
    await writeReg(Reg.MODE, 1); // a slow (50 ms) job
    await writeReg(Reg.DMA_SRC_LO, 0x200000);
    await writeReg(Reg.DMA_DST_LO, 0x201000);
    await writeReg(Reg.DMA_LEN, 64);
    await writeReg(Reg.DOORBELL, 1);
    await c.setMigrationState(S.STOP_COPY);
    expect(mem.read(0x1000, 64)).toEqual(new Uint8Array(64).fill(0xab));
    const saved = await c.readMigrationStream();
    const target = await startDevice(new PciTestDevice('destination', { migratable: true }));
    try {
      const d = await target.connect({ capabilities: { maxDataXferSize: 1024 } });
      await d.setMigrationState(S.RESUMING);
      await d.writeMigrationStream(saved);
      await d.setMigrationState(S.RUNNING);
      expect(u32(await d.regionRead(PciRegion.BAR0, Reg.JOBS, 4))).toBe(1);
      expect(u32(await d.regionRead(PciRegion.BAR0, Reg.STATUS, 4))).toBe(1);
    } finally {
      await target.stop();
    }
  });

  describe('hostile MIG_DATA_WRITE streams', () => {
    async function validStream(): Promise<Uint8Array> {
      await writeReg(Reg.SCRATCH0, 0x5a5a5a5a);
      await c.setMigrationState(S.STOP_COPY);
      const bytes = await c.readMigrationStream();
      await c.setMigrationState(S.RUNNING);
      await writeReg(Reg.SCRATCH0, 0x11111111);
      return bytes;
    }

    /** Feed `bytes` in RESUMING and try to load them; the device must refuse and be unchanged. */
    async function expectRefused(bytes: Uint8Array, what: string): Promise<void> {
      await writeReg(Reg.SCRATCH0, 0x11111111);
      const config = new Uint8Array(await c.regionRead(PciRegion.CONFIG, 0, 256));
      await c.setMigrationState(S.RESUMING);
      for (let at = 0; at < bytes.byteLength; at += 1024) {
        try {
          await c.writeMigrationData(bytes.subarray(at, at + 1024));
        } catch (err) {
          expect((err as { errno: number }).errno, what).toBe(Errno.EINVAL);
        }
      }
      await expect(c.setMigrationState(S.RUNNING), what).rejects.toMatchObject({ errno: Errno.EINVAL });
      expect(await c.migrationState(), what).toBe(S.RESUMING);
      // RESUMING serves region reads: the device is as it was.
      expect(await readReg(Reg.SCRATCH0), what).toBe(0x11111111);
      expect(await c.regionRead(PciRegion.CONFIG, 0, 256), what).toEqual(config);
      await c.reset(); // out of RESUMING
    }

    it('truncated, extended, bit-flipped (with and without a fixed checksum) and random streams are refused', async () => {
      const good = await validStream();
      const fixCrc = (b: Uint8Array): Uint8Array => {
        new DataView(b.buffer).setUint32(b.byteLength - 4, crc32c(b.subarray(0, b.byteLength - 4)), true);
        return b;
      };
      const next = mulberry32(0xfeed);
      const streams: [string, Uint8Array][] = [
        ['empty header', new Uint8Array(16)],
        ['truncated by one', good.subarray(0, good.byteLength - 1)],
        ['truncated to the header', good.subarray(0, 16)],
        ['one byte extra', new Uint8Array([...good, 0])],
        [
          'declares 1 GiB',
          (() => {
            const b = good.slice();
            new DataView(b.buffer).setUint32(12, 1 << 30, true);
            return b;
          })(),
        ],
        [
          'declares less than it sends',
          (() => {
            const b = good.slice();
            new DataView(b.buffer).setUint32(12, 40, true);
            return b;
          })(),
        ],
      ];
      for (let i = 0; i < 40; i++) {
        const b = good.slice();
        const at = next() % b.byteLength;
        b[at] = b[at]! ^ (1 << (next() % 8));
        streams.push([`bit flip at ${at}`, b]);
        // The same flip past the checksum: the structure's own checks must catch it (or the value must be harmless).
        if (at >= 16 && at < b.byteLength - 4) streams.push([`bit flip at ${at}, checksum fixed`, fixCrc(b.slice())]);
      }
      for (let i = 0; i < 20; i++) {
        const b = new Uint8Array(next() % 600);
        for (let j = 0; j < b.length; j++) b[j] = next() & 0xff;
        if (i % 2 === 0 && b.byteLength >= 16) b.set(good.subarray(0, 16)); // a real header, garbage after
        streams.push([`random ${i}`, b]);
      }
      let refused = 0;
      for (const [what, bytes] of streams) {
        // A flip with a fixed checksum may land on a byte whose every value is valid (a register's
        // contents): then it loads, as it should. Everything else must be refused.
        const lands = await tryLoad(bytes);
        if (what.includes('checksum fixed') && lands) continue;
        expect(lands, what).toBe(false);
        refused++;
        await expectRefused(bytes, what);
      }
      expect(refused).toBeGreaterThan(50);
      // And the real one loads.
      await c.setMigrationState(S.RESUMING);
      await c.writeMigrationStream(good);
      await c.setMigrationState(S.RUNNING);
      expect(await readReg(Reg.SCRATCH0)).toBe(0x5a5a5a5a);
    });

    /** Whether the device loads `bytes` (on a throwaway device of the same kind, so this one stays untouched). */
    async function tryLoad(bytes: Uint8Array): Promise<boolean> {
      const probe = new PciTestDevice('probe', { migratable: true });
      try {
        await probe.quiesce();
        await probe.loadState(bytes);
        return true;
      } catch {
        return false;
      } finally {
        probe.close();
      }
    }
  });
});

/** A device that owns its migration data (as libvfio-user's samples/server does): 0x3000 bytes pre-copy, 0x3008 at stop-copy. */
function streamDevice(name: string): { dev: PciDevice; loaded: () => Uint8Array } {
  let phase = new Uint8Array(0);
  let at = 0;
  const mem = new Uint8Array(0x3008);
  for (let i = 0; i < mem.length; i++) mem[i] = (i * 7) & 0xff;
  let incoming: number[] = [];
  const stream: MigrationDataStream = {
    beginSave(p) {
      phase = p === 'pre-copy' ? mem.slice(0, 0x3000) : mem.slice();
      at = 0;
    },
    read(max) {
      const out = phase.subarray(at, at + max);
      at += out.byteLength;
      return out;
    },
    beginLoad() {
      incoming = [];
    },
    write(data) {
      if (incoming.length + data.byteLength > 0x3008) throw new Error('partial write');
      incoming.push(...data);
    },
    endLoad() {
      if (incoming.length !== 0x3008) throw new Error(`${incoming.length} of 0x3008 bytes`);
      mem.set(incoming);
    },
  };
  const dev = new PciDevice({
    name,
    id: { vendor: 0xdead, device: 0xbeef, classCode: 0 },
    bars: [{ index: 0, size: 0x10 }],
    migrationStream: stream,
  });
  return { dev, loaded: () => mem };
}

describe('a device that owns its migration data', () => {
  it("reads exactly the sample client's counts: 12 x 1024 pre-copy, 12 x 1024 + 8 stop-copy; a partial write is EINVAL", async () => {
    const fds = fdBaseline();
    const source = streamDevice('stream-source');
    const target = streamDevice('stream-target');
    const a = await startDevice(source.dev);
    const b = await startDevice(target.dev);
    try {
      const c = await a.connect({ capabilities: { maxDataXferSize: 1024 } });
      await c.setMigrationState(S.PRE_COPY);
      const pre = [];
      for (let i = 0; i < 12; i++) pre.push(await c.readMigrationData(1024));
      expect(pre.every((x) => x.byteLength === 1024)).toBe(true);
      await c.setMigrationState(S.STOP_COPY);
      const stop: Uint8Array[] = [];
      for (let i = 0; i < 13; i++) {
        const r = await migDataRead(c, 8 + 1024, 1024);
        expect(r.message.byteLength).toBe(HEADER_SIZE + 8 + 1024);
        stop.push(new Uint8Array(P.decodeMigDataReadReply(r.message).data));
      }
      expect(stop.map((x) => x.byteLength)).toEqual([...new Array<number>(12).fill(1024), 8]);
      await c.setMigrationState(S.STOP);

      const d = await b.connect({ capabilities: { maxDataXferSize: 1024 } });
      await d.setMigrationState(S.RESUMING);
      for (const chunk of stop) await d.writeMigrationData(chunk);
      await expectErrno(d.writeMigrationData(new Uint8Array(1)), Errno.EINVAL);
      await d.setMigrationState(S.RUNNING);
      expect(target.loaded()).toEqual(source.loaded());
    } finally {
      await a.stop();
      await b.stop();
      source.dev.close();
      target.dev.close();
    }
    await fds.settle();
  });
});
