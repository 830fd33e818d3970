/**
 * DEVICE_FEATURE (16) over a real socket: the codec; a device that cannot
 * migrate (EINVAL for everything, as libvfio-user without migration
 * callbacks); and a migratable device: GET/PROBE/SET of each feature, every
 * state arc, and the errno of every bad input in libvfio-user's table
 * (docs/protocol.md, "Migration"), each leaving the device's state unchanged
 * and the connection alive.
 */
import { describe, expect, it } from 'vitest';
import * as P from '../../protocol/index.js';
import { Errno, HEADER_SIZE, PciIrq, VfioUserCommand } from '../../protocol/constants.js';
import { connectedEachTest, deviceEachTest } from '../helpers/per-test.js';
import { DEVICE_KINDS, expectAlive, expectErrno, expectErrorReply, fields, rawRequest } from '../helpers/harness.js';
import { PciTestDevice } from '../helpers/pci-test-device.js';
import type { RawMessage, VfioUserClient } from '../../client/index.js';

const { GET, SET, PROBE } = P.DeviceFeatureFlag;
const F = P.DeviceFeature;
const S = P.MigrationState;

describe('codec', () => {
  it('DEVICE_FEATURE round-trips', () => {
    const f = P.decodeDeviceFeature(P.encodeDeviceFeatureRequest(1, { flags: GET | 1, data: new Uint8Array(8) }));
    expect(f).toMatchObject({ argsz: 16, flags: 0x10001 });
  });

  it('the features’ data round-trip', () => {
    expect(P.decodeMigrationFeatureData(P.encodeMigrationFeatureData(5))).toBe(5);
    expect(P.decodeMigDeviceStateData(P.encodeMigDeviceStateData({ deviceState: 3, dataFd: 0xffffffff }))).toEqual({
      deviceState: 3,
      dataFd: 0xffffffff,
    });
    const control = { pageSize: 4096n, ranges: [{ iova: 0x1000n, length: 0x2000n }] };
    expect(P.decodeDmaLoggingControl(P.encodeDmaLoggingControl(control))).toEqual(control);
    const report = { iova: 0x10000n, length: 0x4000n, pageSize: 4096n };
    expect(P.decodeDmaLoggingReport(P.encodeDmaLoggingReport(report))).toEqual(report);
    expect(P.dirtyBitmapBytes(4096n * 65n, 4096n)).toBe(16n);
  });

  it('short data is EINVAL, not a read past the message', () => {
    expect(() => P.decodeMigDeviceStateData(new Uint8Array(7))).toThrow(P.ProtocolError);
    expect(() =>
      P.decodeDmaLoggingControl(P.encodeDmaLoggingControl({ pageSize: 4096n, ranges: [] }).subarray(0, 15)),
    ).toThrow(P.ProtocolError);
    const announced = P.encodeDmaLoggingControl({ pageSize: 4096n, ranges: [{ iova: 0n, length: 4096n }] });
    announced[8] = 3; // num_ranges 3, one present
    expect(() => P.decodeDmaLoggingControl(announced)).toThrow(/3 ranges announced/);
  });
});

describe.each(DEVICE_KINDS)('%s (cannot migrate)', (_kind, make) => {
  let client: VfioUserClient;
  connectedEachTest((connected) => {
    client = connected;
  }, make);

  it('every DEVICE_FEATURE is EINVAL, connection alive', async () => {
    await expectErrno(client.deviceFeature(GET | F.MIGRATION, new Uint8Array(8)), Errno.EINVAL);
    await expectErrno(client.deviceFeature(PROBE | F.MIGRATION), Errno.EINVAL);
    await expectErrno(client.deviceFeature(SET | F.MIG_DEVICE_STATE, new Uint8Array(8)), Errno.EINVAL);
    expect((await client.getDeviceInfo()).numIrqs).toBe(PciIrq.COUNT);
  });
});

/** Send DEVICE_FEATURE with exactly these argsz, flags and data; return the raw reply. */
function feature(c: VfioUserClient, argsz: number, flags: number, data: Uint8Array = new Uint8Array(0)) {
  return rawRequest(
    c,
    { command: VfioUserCommand.DEVICE_FEATURE },
    new Uint8Array([...fields(['u32', argsz], ['u32', flags]), ...data]),
  );
}

function stateData(state: number, dataFd = 0xffffffff): Uint8Array {
  return fields(['u32', state], ['u32', dataFd]);
}

describe('a migratable device', () => {
  let c: VfioUserClient;
  deviceEachTest(
    async (r) => {
      c = await r.connect({ capabilities: { maxDataXferSize: 1024 } });
    },
    () => new PciTestDevice('migratable', { migratable: true }),
  );

  /** The device is alive and in `state`. */
  async function expectState(state: number): Promise<void> {
    expect(P.migrationStateName(await c.migrationState())).toBe(P.migrationStateName(state));
  }

  it('GET MIGRATION: STOP_COPY|PRE_COPY (no P2P), argsz 16, whatever argsz >= 16 asked', async () => {
    for (const argsz of [16, 4096]) {
      const r = await feature(c, argsz, GET | F.MIGRATION);
      expect(r.message.byteLength).toBe(HEADER_SIZE + 16);
      const dv = new DataView(r.message.buffer, r.message.byteOffset);
      expect([dv.getUint32(16, true), dv.getUint32(20, true), dv.getBigUint64(24, true)]).toEqual([
        16,
        GET | F.MIGRATION,
        BigInt(P.MigrationFlag.STOP_COPY | P.MigrationFlag.PRE_COPY),
      ]);
    }
    expect(await c.migrationFlags()).toBe(P.MigrationFlag.STOP_COPY | P.MigrationFlag.PRE_COPY);
  });

  it('GET MIG_DEVICE_STATE: RUNNING, data_fd 0', async () => {
    const r = await feature(c, 16, GET | F.MIG_DEVICE_STATE);
    expect([...r.message.subarray(HEADER_SIZE)]).toEqual([
      ...fields(['u32', 16], ['u32', GET | F.MIG_DEVICE_STATE]),
      ...stateData(S.RUNNING, 0),
    ]);
  });

  it('SET MIG_DEVICE_STATE echoes the request byte for byte', async () => {
    const r = await feature(c, 16, SET | F.MIG_DEVICE_STATE, stateData(S.STOP));
    expect([...r.message.subarray(HEADER_SIZE)]).toEqual([
      ...fields(['u32', 16], ['u32', SET | F.MIG_DEVICE_STATE]),
      ...stateData(S.STOP),
    ]);
    await expectState(S.STOP);
  });

  it('PROBE succeeds exactly where every named operation is supported, echoing the request', async () => {
    const ok: [number, number][] = [
      [PROBE | F.MIGRATION, 8],
      [PROBE | GET | F.MIGRATION, 8],
      [PROBE | GET | SET | F.MIG_DEVICE_STATE, 8],
      [PROBE | SET | F.DMA_LOGGING_START, 8],
      [PROBE | SET | F.DMA_LOGGING_STOP, 8],
      [PROBE | GET | F.DMA_LOGGING_REPORT, 8],
    ];
    for (const [flags, argsz] of ok) {
      const r = await feature(c, argsz, flags);
      expect(r.header.error, `flags 0x${flags.toString(16)}`).toBe(0);
      expect(r.message.byteLength).toBe(HEADER_SIZE + 8);
    }
    const extra = await feature(c, 32, PROBE | F.MIGRATION, new Uint8Array(24).fill(7));
    expect(extra.message.byteLength).toBe(HEADER_SIZE + 32);
    expect(await c.probeFeature(F.MIG_DEVICE_STATE, GET | SET)).toBe(true);
    expect(await c.probeFeature(F.MIGRATION, SET)).toBe(false);
  });

  it("every bad DEVICE_FEATURE gets libvfio-user's errno, a header-only reply, and changes nothing", async () => {
    const cases: [string, () => ReturnType<typeof feature>][] = [
      ['payload < 8', () => rawRequest(c, { command: VfioUserCommand.DEVICE_FEATURE }, new Uint8Array(7))],
      ...[0, 3, 5, 9, 0xffff].flatMap((id): [string, () => ReturnType<typeof feature>][] => [
        [`unknown feature ${id} GET`, () => feature(c, 16, GET | id)],
        [`unknown feature ${id} PROBE`, () => feature(c, 8, PROBE | id)],
      ]),
      ['no op bit', () => feature(c, 16, F.MIGRATION)],
      ['GET|SET without PROBE', () => feature(c, 16, GET | SET | F.MIG_DEVICE_STATE, stateData(S.STOP))],
      ['unknown op bit 1<<19', () => feature(c, 16, (1 << 19) | GET | F.MIGRATION)],
      ['SET MIGRATION', () => feature(c, 16, SET | F.MIGRATION, new Uint8Array(8))],
      ['GET LOGGING_START', () => feature(c, 24, GET | F.DMA_LOGGING_START)],
      ['SET LOGGING_REPORT', () => feature(c, 32, SET | F.DMA_LOGGING_REPORT, new Uint8Array(24))],
      ['PROBE|SET MIGRATION', () => feature(c, 8, PROBE | SET | F.MIGRATION)],
      ['PROBE|GET|SET MIGRATION', () => feature(c, 8, PROBE | GET | SET | F.MIGRATION)],
      ['PROBE argsz 2', () => feature(c, 2, PROBE | F.MIGRATION)],
      ['GET MIGRATION argsz 8', () => feature(c, 8, GET | F.MIGRATION)],
      ['GET MIG_DEVICE_STATE argsz 15', () => feature(c, 15, GET | F.MIG_DEVICE_STATE)],
      ['SET MIG_DEVICE_STATE argsz 8', () => feature(c, 8, SET | F.MIG_DEVICE_STATE, stateData(S.STOP))],
      ['SET MIG_DEVICE_STATE without its data', () => feature(c, 16, SET | F.MIG_DEVICE_STATE, new Uint8Array(4))],
      ...[S.ERROR, S.RUNNING_P2P, S.PRE_COPY_P2P, 8, 0xabcd].map((s): [string, () => ReturnType<typeof feature>] => [
        `SET to state ${s}`,
        () => feature(c, 16, SET | F.MIG_DEVICE_STATE, stateData(s)),
      ]),
    ];
    for (const [what, send] of cases) {
      const reply = await send();
      expect({ what, errno: reply.header.error }).toEqual({ what, errno: Errno.EINVAL });
      expectErrorReply(reply, Errno.EINVAL);
      await expectState(S.RUNNING);
    }
    await expectAlive(c);
  });

  it('SET to the current state: success, no change', async () => {
    const r = await feature(c, 16, SET | F.MIG_DEVICE_STATE, stateData(S.RUNNING, 0x1234));
    expect(r.header.error).toBe(0);
    expect([...r.message.subarray(HEADER_SIZE + 8)]).toEqual([...stateData(S.RUNNING, 0x1234)]);
    await expectState(S.RUNNING);
  });

  /** Bring the device from RUNNING to `state`, with valid data loaded when it is RESUMING. */
  async function enter(state: number, saved: Uint8Array): Promise<void> {
    await c.setMigrationState(state);
    if (state === S.RESUMING) await c.writeMigrationStream(saved);
  }

  /** Back to RUNNING from anywhere. */
  async function leave(): Promise<void> {
    const state = await c.migrationState();
    if (state === S.STOP || state === S.STOP_COPY) await c.setMigrationState(S.RUNNING);
    else await c.reset();
    await expectState(S.RUNNING);
  }

  it('every arc between the states we offer, and every refused one, over the socket', async () => {
    await c.setMigrationState(S.STOP_COPY);
    const saved = await c.readMigrationStream();
    await c.setMigrationState(S.RUNNING);
    const offered: number[] = [S.RUNNING, S.STOP, S.STOP_COPY, S.RESUMING, S.PRE_COPY];
    const refusedTargets = [S.ERROR, S.RUNNING_P2P, S.PRE_COPY_P2P, 8, 0xabcd];
    for (const from of offered) {
      for (const to of [...offered, ...refusedTargets]) {
        await enter(from, saved);
        await expectState(from);
        const allowed = offered.includes(to) && !(from === S.STOP_COPY && to === S.PRE_COPY);
        const what = `${P.migrationStateName(from)} -> ${P.migrationStateName(to)}`;
        if (allowed) {
          await c.setMigrationState(to);
          expect(P.migrationStateName(await c.migrationState()), what).toBe(P.migrationStateName(to));
        } else {
          await expectErrno(c.setMigrationState(to), Errno.EINVAL);
          expect(P.migrationStateName(await c.migrationState()), what).toBe(P.migrationStateName(from));
        }
        await leave();
      }
    }
  });

  describe('DMA logging', () => {
    const control = (pageSize: bigint, ranges: { iova: bigint; length: bigint }[] = []) =>
      P.encodeDmaLoggingControl({ pageSize, ranges });
    const report = (iova: bigint, length: bigint, pageSize: bigint) =>
      P.encodeDmaLoggingReport({ iova, length, pageSize });

    async function mapPages(addr: bigint, pages: number, fd = true): Promise<void> {
      if (fd) await c.dmaMap({ addr, backing: c.createGuestMemory(pages * 4096) });
      else await c.dmaMap({ addr, size: BigInt(pages * 4096) });
    }

    it("START / STOP / REPORT: libvfio-user's errno for every bad input", async () => {
      await mapPages(0x10000n, 4);
      await mapPages(0x14000n, 1);
      await mapPages(0x40000n, 2, false);
      const start = (data: Uint8Array, argsz = 8 + data.byteLength) =>
        feature(c, argsz, SET | F.DMA_LOGGING_START, data);
      const get = (data: Uint8Array, argsz = 8 + 24 + 8) => feature(c, argsz, GET | F.DMA_LOGGING_REPORT, data);
      const expectFails = async (reply: Promise<RawMessage>, errno: number, what: string): Promise<void> => {
        const r = await reply;
        expect({ what, errno: r.header.error }).toEqual({ what, errno });
        expectErrorReply(r, errno);
      };

      await expectFails(get(report(0x10000n, 0x4000n, 4096n)), Errno.EINVAL, 'REPORT before START');
      await expectFails(start(control(0n)), Errno.EINVAL, 'START page size 0');
      await expectFails(start(control(3000n)), Errno.EINVAL, 'START page size 3000 (libvfio-user: accepted)');
      await expectFails(start(control(8192n)), Errno.EINVAL, 'START page size 8192 with a 4 KiB map');
      await expectFails(start(control(4096n), 8), Errno.EINVAL, 'START argsz 8');
      const announced = control(4096n, [{ iova: 0x10000n, length: 0x1000n }]);
      announced[8] = 3;
      await expectFails(
        start(announced),
        Errno.EINVAL,
        'START announcing 3 ranges, 1 present (libvfio-user: reads past)',
      );
      await expectFails(
        start(control(4096n, [{ iova: 0x10800n, length: 0x1000n }])),
        Errno.EINVAL,
        'START unaligned range',
      );

      const ok = await start(control(4096n, [{ iova: 0x90000n, length: 0x1000n }]));
      expect(ok.header.error).toBe(0);
      expect(ok.message.byteLength).toBe(HEADER_SIZE + 8 + 32);
      expect((await start(control(4096n))).header.error).toBe(0); // again, same page size
      await expectFails(start(control(8192n)), Errno.EINVAL, 'START again with another page size');

      await expectFails(get(report(0x80000n, 0x1000n, 4096n)), Errno.ENOENT, 'REPORT unmapped');
      await expectFails(get(report(0x11000n, 0x1000n, 4096n)), Errno.ENOTSUP, 'REPORT not at a map base');
      await expectFails(
        get(report(0x10000n, 0x5000n, 4096n), 8 + 24 + 8),
        Errno.ENOTSUP,
        'REPORT spanning two maps (libvfio-user: empty success)',
      );
      await expectFails(get(report(0x10000n, 0x800n, 4096n)), Errno.EINVAL, 'REPORT length < page size');
      for (const ps of [0n, 3000n])
        await expectFails(get(report(0x10000n, 0x4000n, ps)), Errno.EINVAL, `REPORT page size ${ps}`);
      await expectFails(get(report(0x10000n, 0x1000n, 8192n)), Errno.EINVAL, 'REPORT page size > length');
      await expectFails(get(report(0x10000n, 0x4000n, 1024n), 8 + 24 + 8 - 1), Errno.EINVAL, 'REPORT argsz one short');

      const prefix = await get(report(0x10000n, 0x2000n, 4096n));
      expect(prefix.header.error).toBe(0);
      expect(prefix.message.byteLength).toBe(HEADER_SIZE + 40);
      const roomy = await get(report(0x10000n, 0x4000n, 4096n), 4096);
      expect(new DataView(roomy.message.buffer, roomy.message.byteOffset).getUint32(HEADER_SIZE, true)).toBe(40);
      expect((await get(report(0x10000n, 0x4000n, 1024n))).header.error).toBe(0);
      expect((await get(report(0x40000n, 0x2000n, 4096n))).header.error, 'map without fd (libvfio-user: EINVAL)').toBe(
        0,
      );

      const stop = () => feature(c, 24, SET | F.DMA_LOGGING_STOP, control(4096n));
      expect((await stop()).message.byteLength).toBe(HEADER_SIZE + 24);
      expect((await stop()).header.error).toBe(0);
      await expectFails(get(report(0x10000n, 0x4000n, 4096n)), Errno.EINVAL, 'REPORT after STOP');
      await expectState(S.RUNNING);
      await expectAlive(c);
    });

    it('a REPORT bitmap of more than 32 MiB is E2BIG', async () => {
      // A 1 TiB map without an fd (sent raw: the client would allocate its bytes).
      const map = P.encodeDmaMapRequest(0, { flags: 3, offset: 0n, addr: 0n, size: 1n << 40n }).subarray(HEADER_SIZE);
      expect((await rawRequest(c, { command: VfioUserCommand.DMA_MAP }, map)).header.error).toBe(0);
      await c.startDirtyLogging();
      const length = 1n << 40n;
      const argsz = 8 + 24 + Number(P.dirtyBitmapBytes(length, 1024n));
      const r = await feature(c, argsz, GET | F.DMA_LOGGING_REPORT, report(0n, length, 1024n));
      expectErrorReply(r, Errno.E2BIG);
    });
  });
});
