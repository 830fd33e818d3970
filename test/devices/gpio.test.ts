/** The PCI-IDIO-16 served on a real vfio-user socket, driven by the TypeScript client. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createGpioDevice, type GpioDevice } from '../../devices/gpio/index.js';
import { IDIO16_BAR_SIZE, IDIO16_IO_BAR_SIZE, IrqStatus, Idio16Reg } from '../../devices/gpio/registers.js';
import { IrqSetFlag, PciIrq, PciRegion } from '../../protocol/constants.js';
import type { VfioUserClient } from '../../client/index.js';
import { startDevice, testLogger, type RunningDevice } from '../helpers/harness.js';

const BAR2 = PciRegion.BAR2;

async function readByte(c: VfioUserClient, offset: number): Promise<number> {
  return (await c.regionRead(BAR2, offset, 1))[0]!;
}
async function writeByte(c: VfioUserClient, offset: number, value: number): Promise<void> {
  await c.regionWrite(BAR2, offset, Uint8Array.of(value));
}
function unmaskIntx(c: VfioUserClient): Promise<void> {
  return c.setIrqs({ flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, index: PciIrq.INTX, start: 0, count: 1 });
}

describe('PCI-IDIO-16 over vfio-user', () => {
  let dev: GpioDevice;
  let running: RunningDevice<GpioDevice['device']>;
  let client: VfioUserClient;

  beforeEach(async () => {
    dev = createGpioDevice({ name: 'gpio-test', log: testLogger() });
    running = await startDevice(dev.device);
    client = await running.connect();
  });
  afterEach(async () => {
    await running.stop();
    dev.device.close();
  });

  it('looks like the ACCES card: ids, INTx pin A, BAR2', async () => {
    expect(await client.cfg16(0x00)).toBe(0x494f);
    expect(await client.cfg16(0x02)).toBe(0x0dc8);
    expect(await client.cfg8(0x3d)).toBe(1);
    const bar = await client.probeBar(2);
    expect(bar.type).toBe('io');
    expect(bar.size).toBe(BigInt(IDIO16_IO_BAR_SIZE));
    expect((await client.getRegionInfo(BAR2)).size).toBe(BigInt(IDIO16_IO_BAR_SIZE));
    const info = await client.getIrqInfo(PciIrq.INTX);
    expect(info.count).toBe(1);
  });

  it("barType 'mem32' puts the registers in a 256-byte memory BAR", async () => {
    const mem = createGpioDevice({ name: 'gpio-mem', barType: 'mem32' });
    const other = await startDevice(mem.device);
    try {
      const c = await other.connect();
      const bar = await c.probeBar(2);
      expect(bar.type).toBe('mem32');
      expect(bar.size).toBe(BigInt(IDIO16_BAR_SIZE));
      await c.regionWrite(BAR2, Idio16Reg.OUT8_15, Uint8Array.of(0x42));
      expect(mem.gpio.getOutputs()).toBe(0x4200);
      expect([...(await c.regionRead(BAR2, 0xf0, 4))]).toEqual([0, 0, 0, 0]);
    } finally {
      await other.stop();
      mem.device.close();
    }
  });

  it('outputs: the host sees what the guest writes, and it reads back', async () => {
    const seen: number[] = [];
    dev.gpio.on('outputs', (s) => seen.push(s));
    await writeByte(client, Idio16Reg.OUT0_7, 0x3c);
    await writeByte(client, Idio16Reg.OUT8_15, 0xa5);
    expect(dev.gpio.getOutputs()).toBe(0xa53c);
    expect(seen).toEqual([0x003c, 0xa53c]);
    expect(await readByte(client, Idio16Reg.OUT0_7)).toBe(0x3c);
    expect(await readByte(client, Idio16Reg.OUT8_15)).toBe(0xa5);
  });

  it('inputs: the guest reads what the host sets', async () => {
    dev.gpio.setInputs(0x5ac3);
    expect(await readByte(client, Idio16Reg.IN0_7)).toBe(0xc3);
    expect(await readByte(client, Idio16Reg.IN8_15)).toBe(0x5a);
    dev.gpio.setInput(0, 0);
    expect(await readByte(client, Idio16Reg.IN0_7)).toBe(0xc2);
  });

  it('a wide access is split into byte registers, low byte first', async () => {
    await client.regionWrite(BAR2, 0, Uint8Array.of(0x11, 0, 0, 0x22)); // OUT0_7, clear, disable, filters off
    dev.gpio.setInputs(0x0077);
    const word = await client.regionRead(BAR2, 0, 4); // the read of 0x2 enables the IRQ, of 0x3 the filters
    expect([...word]).toEqual([0x11, 0x77, 0, 0]);
    expect(dev.gpio.state()).toMatchObject({ outputs: 0x11, irqEnabled: true, filtersActive: true });
  });

  it('change of state raises INTx; the driver sequence (status, clear, EOI) re-arms it', async () => {
    await client.enableIrqs(PciIrq.INTX, 1);
    await writeByte(client, Idio16Reg.IN0_7, 0); // clear
    await readByte(client, Idio16Reg.IRQ_CTL); // enable

    dev.gpio.setInput(3, 1);
    await client.waitForIrq(PciIrq.INTX, 0);
    expect(await readByte(client, Idio16Reg.IRQ_STATUS)).toBe(IrqStatus.PENDING | IrqStatus.GROUP0_7);
    await unmaskIntx(client); // QEMU's EOI on the first BAR access
    await writeByte(client, Idio16Reg.IN0_7, 0); // the handler clears
    expect(await readByte(client, Idio16Reg.IRQ_STATUS)).toBe(0);

    dev.gpio.setInput(12, 1);
    await client.waitForIrq(PciIrq.INTX, 0);
    expect(client.irqCount(PciIrq.INTX, 0)).toBe(2);
    expect(await readByte(client, Idio16Reg.IRQ_STATUS)).toBe(IrqStatus.PENDING | IrqStatus.GROUP8_15);

    // Disabled: changes raise nothing.
    await writeByte(client, Idio16Reg.IN0_7, 0);
    await unmaskIntx(client);
    await writeByte(client, Idio16Reg.IRQ_CTL, 0);
    dev.gpio.setInputs(0);
    expect(await readByte(client, Idio16Reg.IRQ_STATUS)).toBe(0);
    expect(client.irqCount(PciIrq.INTX, 0)).toBe(2);
  });

  it('DEVICE_RESET and a lost connection return the registers to power-on', async () => {
    const seen: number[] = [];
    dev.gpio.on('outputs', (s) => seen.push(s));
    dev.gpio.setInputs(0x0f0f);
    await writeByte(client, Idio16Reg.OUT0_7, 0xff);
    await readByte(client, Idio16Reg.IRQ_CTL);
    await client.reset();
    expect(dev.gpio.state()).toMatchObject({ outputs: 0, inputs: 0x0f0f, irqEnabled: false, irqPending: false });
    expect(seen).toEqual([0xff, 0]);

    await writeByte(client, Idio16Reg.OUT8_15, 0x80);
    const reset = new Promise<void>((resolve) => dev.gpio.once('reset', resolve));
    client.close();
    await reset;
    expect(dev.gpio.getOutputs()).toBe(0);
  });
});
