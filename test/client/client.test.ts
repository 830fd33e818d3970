/** VfioUserClient helpers against a real server and device: PCI config-space helpers and hand-built requests. */
import { describe, expect, it } from 'vitest';
import { VfioUserCommand } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import { DEVICE_KINDS, type RunningDevice } from '../helpers/harness.js';
import { BAR0_SIZE, BAR2_SIZE, Reg } from '../helpers/test-device.js';
import { PciCommandBit, type VfioUserClient } from '../../client/index.js';
import { PciDevice } from '../../server/pci/index.js';

describe.each(DEVICE_KINDS)('client helpers (%s)', (_kind, make) => {
  let run: RunningDevice;
  let client: VfioUserClient;
  connectedEachTest((connected, started) => {
    client = connected;
    run = started;
  }, make);

  it('PCI helpers: BAR sizing and the capability walk', async () => {
    expect(await client.probeBar(0)).toMatchObject({ type: 'mem32', size: BigInt(BAR0_SIZE), prefetchable: false });
    expect(await client.probeBar(2)).toMatchObject({ type: 'mem32', size: BigInt(BAR2_SIZE), prefetchable: true });
    expect(await client.probeBar(1)).toMatchObject({ type: 'none', size: 0n });
    expect(await client.capabilities()).toEqual(run.device.expectedCapabilities);
  });

  it('enableDevice sets memory decoding and bus mastering; barRead32/barWrite32 reach BAR registers', async () => {
    await client.cfgWrite16(0x04, 0); // the harness's connect() enabled both, as a driver does: start from reset
    expect((await client.cfg16(0x04)) & 0x6).toBe(0);
    if (run.device instanceof PciDevice) expect(run.device.busMasterEnabled).toBe(false);
    const command = await client.enableDevice();
    expect(command & (PciCommandBit.MEMORY | PciCommandBit.BUS_MASTER)).toBe(0x6);
    expect(command & PciCommandBit.IO).toBe(0);
    if (run.device instanceof PciDevice) expect(run.device.busMasterEnabled).toBe(true);
    await client.barWrite32(0, Reg.SCRATCH1, 0xdeadbeef);
    expect(await client.barRead32(0, Reg.SCRATCH1)).toBe(0xdeadbeef);
    await client.barWrite32(0, Reg.SCRATCH0, 0x01020304, { posted: true });
    expect(await client.barRead32(0, Reg.SCRATCH0)).toBe(0x01020304);
  });

  it('raw request(): a command built by hand', async () => {
    const payload = new Uint8Array(16);
    new DataView(payload.buffer).setUint32(0, 16, true);
    const reply = (await client.request(VfioUserCommand.DEVICE_GET_INFO, payload))!;
    expect(reply.message.byteLength).toBe(32);
    expect(reply.header.command).toBe(VfioUserCommand.DEVICE_GET_INFO);
  });
});
