/**
 * DeviceState versions and the saved-state envelope, through PciDevice's
 * saveState/loadState: a newer module loads an older state (upgraded), a
 * state too new, of an unknown old version, of another device kind or of
 * another PCI layout is refused with both sides named, and nothing changes
 * on a refusal.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { PciDevice, type PciDeviceOptions } from '../../../server/pci/index.js';
import { Field, StateError } from '../../../server/state/fields.js';
import { defineDeviceState, olderState, type DeviceState } from '../../../server/state/device-state.js';
import { decodeEnvelope, encodeEnvelope } from '../../../server/state/envelope.js';
import { crc32c } from '../../../server/state/crc32c.js';
import { Cfg } from '../../../server/pci/header.js';

const v1Fields = Field.struct({ scratch: Field.u32() });
const v2Fields = Field.struct({ scratch: Field.u32(), mode: Field.oneOf(['fast', 'slow']) });

/** A device whose registers are `regs`, with the given state declaration. */
function widget(state: DeviceState<never> | undefined, extra: Partial<PciDeviceOptions> = {}): PciDevice {
  return new PciDevice({
    name: 'widget',
    id: { vendor: 0x1b36, device: 0x0042, classCode: 0xff0000 },
    bars: [{ index: 0, size: 0x1000 }],
    interrupts: { intx: true, msix: { vectors: 2, bar: 1 } },
    ...(state ? { state: state } : {}),
    ...extra,
  });
}

interface Regs {
  scratch: number;
  mode: 'fast' | 'slow';
}

function v1(regs: Regs): DeviceState<{ scratch: number }> {
  return defineDeviceState({
    kind: 'acme-widget',
    version: 1,
    schema: v1Fields,
    save: () => ({ scratch: regs.scratch }),
    load: (s) => {
      regs.scratch = s.scratch;
    },
  });
}

function v2(regs: Regs, kind = 'acme-widget'): DeviceState<Regs> {
  return defineDeviceState({
    kind,
    version: 2,
    schema: v2Fields,
    save: () => ({ ...regs }),
    load: (s) => {
      if (s.scratch === 0xbad) throw new RangeError('scratch 0xbad is reserved');
      Object.assign(regs, s);
    },
    older: [olderState(1, v1Fields, (old) => ({ scratch: old.scratch, mode: 'fast' as const }))],
  });
}

const devices: PciDevice[] = [];
afterEach(() => {
  for (const d of devices.splice(0)) d.close();
});
function make(state: DeviceState<unknown> | undefined, extra: Partial<PciDeviceOptions> = {}): PciDevice {
  const d = widget(state as DeviceState<never> | undefined, extra);
  devices.push(d);
  return d;
}

async function saved(dev: PciDevice): Promise<Uint8Array> {
  await dev.quiesce();
  return dev.saveState();
}

describe('DeviceState versions', () => {
  it('a newer module loads an older state, upgraded', async () => {
    const oldRegs: Regs = { scratch: 0x1234, mode: 'slow' };
    const bytes = await saved(make(v1(oldRegs)));
    const regs: Regs = { scratch: 0, mode: 'slow' };
    const dev = make(v2(regs));
    await dev.quiesce();
    await dev.loadState(bytes);
    expect(regs).toEqual({ scratch: 0x1234, mode: 'fast' });
  });

  it('an older module refuses a newer state, naming both versions; nothing changes', async () => {
    const bytes = await saved(make(v2({ scratch: 7, mode: 'slow' })));
    const regs: Regs = { scratch: 1, mode: 'fast' };
    const dev = make(v1(regs));
    await dev.quiesce();
    await expect(dev.loadState(bytes)).rejects.toThrow(
      /state of 'acme-widget' is version 2, newer than this module's version 1/,
    );
    await expect(dev.loadState(bytes)).rejects.toBeInstanceOf(StateError);
    expect(regs.scratch).toBe(1);
  });

  it('a version the module no longer reads is refused, naming it and what it reads', async () => {
    const regs: Regs = { scratch: 0, mode: 'fast' };
    const v3 = defineDeviceState({
      kind: 'acme-widget',
      version: 3,
      schema: v2Fields,
      save: () => ({ ...regs }),
      load: (s) => void Object.assign(regs, s),
      older: [olderState(2, v2Fields, (s) => s)],
    });
    const bytes = await saved(make(v1({ scratch: 5, mode: 'fast' })));
    const dev = make(v3);
    await dev.quiesce();
    await expect(dev.loadState(bytes)).rejects.toThrow(
      /version 1, which this module \(version 3\) no longer reads \(it reads 2, 3\)/,
    );
  });

  it('another device kind is refused, naming both kinds', async () => {
    const bytes = await saved(make(v2({ scratch: 5, mode: 'fast' }, 'other-widget')));
    const dev = make(v2({ scratch: 0, mode: 'fast' }));
    await dev.quiesce();
    await expect(dev.loadState(bytes)).rejects.toThrow(
      /state is for a device of kind 'other-widget', this device is 'acme-widget'/,
    );
  });

  it('fields changed under the same version number are refused', async () => {
    const changed = defineDeviceState({
      kind: 'acme-widget',
      version: 2,
      schema: Field.struct({ scratch: Field.u32(), mode: Field.oneOf(['fast', 'slow', 'off']) }),
      save: () => ({ scratch: 1, mode: 'off' as const }),
      load: () => undefined,
    });
    const bytes = await saved(make(changed));
    const dev = make(v2({ scratch: 0, mode: 'fast' }));
    await dev.quiesce();
    await expect(dev.loadState(bytes)).rejects.toThrow(/does not have the fields this module knows as version 2/);
  });

  it("the device's load refusing leaves the library's state and the device's as they were", async () => {
    const source = make(v2({ scratch: 0xbad, mode: 'slow' }));
    await source.config.write(Cfg.COMMAND, Uint8Array.of(0x06, 0x04));
    const bytes = await saved(source);
    const regs: Regs = { scratch: 9, mode: 'fast' };
    const dev = make(v2(regs));
    const before = dev.config.bytes.slice();
    await dev.quiesce();
    await expect(dev.loadState(bytes)).rejects.toThrow(/the device refused it: scratch 0xbad is reserved/);
    expect(regs).toEqual({ scratch: 9, mode: 'fast' });
    expect(dev.config.bytes).toEqual(before);
  });

  it('saveState and loadState need a quiesced device', async () => {
    const dev = make(v2({ scratch: 0, mode: 'fast' }));
    await expect(dev.saveState()).rejects.toThrow(/quiesce/);
    await expect(dev.loadState(new Uint8Array(20))).rejects.toThrow(/quiesce/);
  });

  it('defineDeviceState refuses a bad kind, version or older version', () => {
    const base = { schema: v1Fields, save: () => ({ scratch: 0 }), load: () => undefined };
    expect(() => defineDeviceState({ ...base, kind: '', version: 1 })).toThrow(RangeError);
    expect(() => defineDeviceState({ ...base, kind: 'x y', version: 1 })).toThrow(RangeError);
    expect(() => defineDeviceState({ ...base, kind: 'x', version: 0 })).toThrow(RangeError);
    expect(() =>
      defineDeviceState({ ...base, kind: 'x', version: 1, older: [olderState(1, v1Fields, (s) => s)] }),
    ).toThrow(/not below 1/);
  });
});

describe('library state', () => {
  it('carries BAR programming, COMMAND, MSI-X table and interrupt state', async () => {
    const source = make(v2({ scratch: 1, mode: 'fast' }));
    await source.config.write(Cfg.BAR0, Uint8Array.of(0x00, 0x30, 0x00, 0xfe));
    await source.config.write(Cfg.COMMAND, Uint8Array.of(0x06, 0x04)); // MEMORY | MASTER | INTX_DISABLE
    const table = source.msixLayout!;
    await source.regionWrite(
      table.tableBar,
      BigInt(table.tableOffset),
      Uint8Array.of(0x00, 0x10, 0xe0, 0xfe, 0, 0, 0, 0, 0x21, 0, 0, 0, 0),
    );
    source.irq.trigger(0); // INTx is the mode only once enabled: nothing enabled, so nothing pends
    const bytes = await saved(source);

    const dest = make(v2({ scratch: 0, mode: 'fast' }));
    await dest.quiesce();
    await dest.loadState(bytes);
    expect(dest.config.u32(Cfg.BAR0)).toBe(0xfe003000);
    expect(dest.command).toBe(0x0406);
    const entry = await dest.regionRead(table.tableBar, BigInt(table.tableOffset), 16);
    expect([...entry]).toEqual([0x00, 0x10, 0xe0, 0xfe, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0, 0, 0]);
    expect(dest.config.bytes).toEqual(source.config.bytes);
    // Bus Master Enable is honoured (the device started with it off): DMA and MSI may go on.
    expect(dest.busMasterEnabled).toBe(true);
    expect(dest.dma.busMaster).toBe(true);
    expect(dest.irq.busMaster).toBe(true);
  });

  it('refuses a state saved by a device of another layout (another BAR size)', async () => {
    const bytes = await saved(make(v2({ scratch: 1, mode: 'fast' })));
    const dev = make(v2({ scratch: 0, mode: 'fast' }), { bars: [{ index: 0, size: 0x2000 }] });
    await dev.quiesce();
    await expect(dev.loadState(bytes)).rejects.toThrow(/saved for another PCI layout/);
  });

  it('refuses a state with a device section when the device declares none, and the reverse', async () => {
    const withDev = await saved(make(v2({ scratch: 1, mode: 'fast' })));
    const bare = make(undefined);
    await bare.quiesce();
    await expect(bare.loadState(withDev)).rejects.toThrow(/declares no DeviceState/);
    const without = await bare.saveState();
    const dev = make(v2({ scratch: 0, mode: 'fast' }));
    await dev.quiesce();
    await expect(dev.loadState(without)).rejects.toThrow(/needs one of kind 'acme-widget'/);
  });
});

describe('envelope', () => {
  it('starts with VUTSSTAT, format 1, its length, and ends with a CRC-32C of the rest', () => {
    const bytes = encodeEnvelope([['PCI ', Uint8Array.of(1, 2, 3)]]);
    const dv = new DataView(bytes.buffer);
    expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe('VUTSSTAT');
    expect(dv.getUint16(8, true)).toBe(1);
    expect(dv.getUint16(10, true)).toBe(0);
    expect(dv.getUint32(12, true)).toBe(bytes.byteLength);
    expect(new TextDecoder().decode(bytes.subarray(16, 20))).toBe('PCI ');
    expect(dv.getUint32(20, true)).toBe(3);
    expect(dv.getUint32(bytes.byteLength - 4, true)).toBe(crc32c(bytes.subarray(0, bytes.byteLength - 4)));
    expect(decodeEnvelope(bytes, ['PCI '], 1000).get('PCI ')).toEqual(Uint8Array.of(1, 2, 3));
  });

  it('refuses another magic, format, flags, length, checksum, unknown or repeated sections', () => {
    const good = encodeEnvelope([['PCI ', Uint8Array.of(1)]]);
    const variants: [string, (b: Uint8Array) => void, RegExp][] = [
      ['magic', (b) => (b[0] = 0x58), /bad magic/],
      ['format', (b) => (b[8] = 2), /format version 2, this library reads format version 1/],
      ['flags', (b) => (b[10] = 1), /unknown format flags/],
      ['length', (b) => (b[12] = b[12]! + 1), /its header says/],
      ['checksum', (b) => (b[16 + 8] = 9), /checksum mismatch/],
    ];
    for (const [, mutate, error] of variants) {
      const b = good.slice();
      mutate(b);
      expect(() => decodeEnvelope(b, ['PCI '], 1000)).toThrow(error);
    }
    expect(() => decodeEnvelope(good, ['DEV '], 1000)).toThrow(/unknown section 'PCI '/);
    const twice = encodeEnvelope([
      ['PCI ', Uint8Array.of(1)],
      ['PCI ', Uint8Array.of(2)],
    ]);
    expect(() => decodeEnvelope(twice, ['PCI '], 1000)).toThrow(/section 'PCI ' twice/);
    expect(() => decodeEnvelope(good, ['PCI '], 10)).toThrow(/more than this device accepts/);
  });
});
