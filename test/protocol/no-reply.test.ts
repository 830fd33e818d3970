/** NO_REPLY: never answered, not even with an error; the next request's reply is the next message. */
import { describe, expect, it } from 'vitest';
import { VfioUserCommand, HeaderFlag, PciRegion } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import { expectAlive, rawMessage, fields, type RunningDevice } from '../helpers/harness.js';
import { Reg } from '../helpers/test-device.js';
import type { VfioUserClient } from '../../client/index.js';

let run: RunningDevice;
let c: VfioUserClient;

connectedEachTest((client, started) => {
  c = client;
  run = started;
});

const posted = (command: number, payload: Uint8Array, id = c.freshId()) =>
  c.sendRaw(rawMessage({ id, command, flags: HeaderFlag.NO_REPLY }, payload), [], { expectId: null });

describe('NO_REPLY', () => {
  it('valid posted writes are applied and not answered', async () => {
    for (let i = 0; i < 100; i++) {
      await posted(
        VfioUserCommand.REGION_WRITE,
        fields(['u64', Reg.SCRATCH0], ['u32', PciRegion.BAR0], ['u32', 4], ['u32', i]),
      );
    }
    const v = await c.regionRead(PciRegion.BAR0, Reg.SCRATCH0, 4);
    expect(new DataView(v.buffer, v.byteOffset).getUint32(0, true)).toBe(99);
    expect(c.strays).toEqual([]);
  });

  it('failing NO_REPLY requests get no error reply either', async () => {
    await posted(
      VfioUserCommand.REGION_WRITE,
      fields(['u64', 0x10000], ['u32', PciRegion.BAR0], ['u32', 4], ['u32', 0]),
    );
    await posted(VfioUserCommand.REGION_READ, fields(['u64', 0], ['u32', 99], ['u32', 4]));
    await posted(VfioUserCommand.DEVICE_GET_INFO, fields(['u32', 1]));
    await posted(0x7777, new Uint8Array(8));
    await posted(VfioUserCommand.DMA_UNMAP, fields(['u32', 24], ['u32', 0], ['u64', 0x1000], ['u64', 0x1000]));
    await expectAlive(c);
    expect(c.strays).toEqual([]);
  });

  it('every command with NO_REPLY: nothing comes back', async () => {
    await posted(VfioUserCommand.DEVICE_GET_INFO, fields(['u32', 16], ['u32', 0], ['u32', 0], ['u32', 0]));
    await posted(
      VfioUserCommand.DEVICE_GET_REGION_INFO,
      fields(['u32', 32], ['u32', 0], ['u32', 2], ['u32', 0], ['u64', 0], ['u64', 0]),
    );
    await posted(VfioUserCommand.DEVICE_GET_IRQ_INFO, fields(['u32', 16], ['u32', 0], ['u32', 2], ['u32', 0]));
    await posted(VfioUserCommand.REGION_READ, fields(['u64', 0], ['u32', PciRegion.CONFIG], ['u32', 4]));
    await posted(
      VfioUserCommand.DMA_MAP,
      fields(['u32', 32], ['u32', 3], ['u64', 0], ['u64', 0x100000], ['u64', 0x1000]),
    );
    await posted(VfioUserCommand.DMA_UNMAP, fields(['u32', 24], ['u32', 0], ['u64', 0x100000], ['u64', 0x1000]));
    await posted(VfioUserCommand.DEVICE_RESET, new Uint8Array(0));
    await expectAlive(c);
    expect(c.strays).toEqual([]);
    expect(run.device.resets).toEqual(['client']);
  });

  it('the typed posted write', async () => {
    await c.regionWrite(PciRegion.BAR0, Reg.SCRATCH1, fields(['u32', 0x1234]), { posted: true });
    expect(await c.regionRead(PciRegion.BAR0, Reg.SCRATCH1, 4)).toEqual(fields(['u32', 0x1234]));
    expect(c.strays).toEqual([]);
  });
});
