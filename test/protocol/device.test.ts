/**
 * DEVICE_GET_INFO (4) and DEVICE_RESET (13): the codec, the happy path on both
 * device models, and libvfio-user's EINVAL for bad input (the connection lives).
 */
import { describe, expect, it } from 'vitest';
import * as P from '../../protocol/index.js';
import { VfioUserCommand, DeviceFlag, Errno, HeaderFlag, PciIrq, PciRegion } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import {
  DEVICE_KINDS,
  expectAlive,
  expectErrorReply,
  fields,
  rawRequest,
  type RunningDevice,
} from '../helpers/harness.js';
import { Reg } from '../helpers/test-device.js';
import type { VfioUserClient } from '../../client/index.js';

const u32s = (...v: number[]) => fields(...v.map((x) => ['u32', x] as ['u32', number]));

describe('codec', () => {
  it('GET_INFO round-trips; every field at its spec offset', () => {
    expect(P.decodeDeviceInfo(P.encodeDeviceInfoReply(1, { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 }))).toEqual({
      argsz: 16,
      flags: 3,
      numRegions: 9,
      numIrqs: 5,
    });
    expect(P.decodeDeviceInfo(P.encodeDeviceInfoRequest(1)).argsz).toBe(16);
    const info = P.encodeDeviceInfoReply(1, { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 });
    const u32 = (m: Uint8Array, o: number) => new DataView(m.buffer, m.byteOffset).getUint32(o, true);
    expect([16, 20, 24, 28].map((o) => u32(info, o))).toEqual([16, 3, 9, 5]);
  });

  it('DEVICE_RESET is a header alone both ways', () => {
    expect(P.encodeDeviceResetRequest(1).byteLength).toBe(16);
    expect(P.decodeHeader(P.encodeDeviceResetReply(1)).flags).toBe(HeaderFlag.TYPE_REPLY);
  });
});

describe.each(DEVICE_KINDS)('happy path (%s)', (_kind, make) => {
  let run: RunningDevice;
  let client: VfioUserClient;
  connectedEachTest((connected, started) => {
    client = connected;
    run = started;
  }, make);

  it('DEVICE_GET_INFO', async () => {
    const info = await client.getDeviceInfo();
    expect(info.numRegions).toBe(PciRegion.COUNT);
    expect(info.numIrqs).toBe(PciIrq.COUNT);
    expect(info.flags & DeviceFlag.PCI).toBe(DeviceFlag.PCI);
    expect(info.flags & DeviceFlag.RESET).toBe(DeviceFlag.RESET);
  });

  it('DEVICE_RESET reaches the device and keeps DMA maps and IRQ fds', async () => {
    const u32 = (v: number) => fields(['u32', v]);
    await client.enableIrqs(PciIrq.MSIX, 1);
    await client.dmaMap({ addr: 0x1000n, size: 0x1000n });
    await client.regionWrite(PciRegion.BAR0, Reg.SCRATCH0, u32(7));
    await client.reset();
    expect(run.device.resets).toEqual(['client']);
    expect(await client.regionRead(PciRegion.BAR0, Reg.SCRATCH0, 4)).toEqual(u32(0));
    expect(run.device.dmaRanges().length).toBe(1);
    expect(run.device.hasEventfd(PciIrq.MSIX, 0)).toBe(true);
  });
});

describe('DEVICE_GET_INFO: bad input', () => {
  let c: VfioUserClient;
  connectedEachTest((client) => {
    c = client;
  });

  const cases: Array<[string, Uint8Array]> = [
    ['GET_INFO payload 12 bytes', u32s(16, 0, 0)],
    ['GET_INFO argsz 15', u32s(15, 0, 0, 0)],
    ['GET_INFO argsz 0', u32s(0, 0, 0, 0)],
  ];
  for (const [what, payload] of cases) {
    it(`${what} -> EINVAL, alive`, async () => {
      expectErrorReply(await rawRequest(c, { command: VfioUserCommand.DEVICE_GET_INFO }, payload), Errno.EINVAL);
      await expectAlive(c);
    });
  }

  it('GET_INFO with a larger argsz: the reply is still 16 bytes of payload', async () => {
    const reply = await rawRequest(c, { command: VfioUserCommand.DEVICE_GET_INFO }, u32s(1024, 0, 0, 0));
    expect(reply.message.byteLength).toBe(32);
  });
});
