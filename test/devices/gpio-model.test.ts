/** The PCI-IDIO-16 register model on its own: what the Linux driver reads and writes. */
import { describe, expect, it } from 'vitest';
import { Idio16 } from '../../devices/gpio/idio16.js';
import { IrqStatus, Idio16Reg } from '../../devices/gpio/registers.js';

function model(): { gpio: Idio16; line: boolean[] } {
  const line: boolean[] = [];
  const gpio = new Idio16((asserted) => line.push(asserted));
  return { gpio, line };
}

describe('Idio16 register model', () => {
  it('reads back the outputs written at 0x0 and 0x4 and reports each change', () => {
    const { gpio } = model();
    const events: [number, number][] = [];
    gpio.on('outputs', (state, previous) => events.push([state, previous]));
    gpio.writeRegister(Idio16Reg.OUT0_7, 0xa5);
    gpio.writeRegister(Idio16Reg.OUT8_15, 0x3c);
    gpio.writeRegister(Idio16Reg.OUT8_15, 0x3c); // no change, no event
    expect(gpio.readRegister(Idio16Reg.OUT0_7)).toBe(0xa5);
    expect(gpio.readRegister(Idio16Reg.OUT8_15)).toBe(0x3c);
    expect(gpio.getOutputs()).toBe(0x3ca5);
    expect(events).toEqual([
      [0x00a5, 0],
      [0x3ca5, 0x00a5],
    ]);
  });

  it('shows the host inputs at 0x1 and 0x5; writes there do not change them', () => {
    const { gpio } = model();
    gpio.setInputs(0x8001);
    gpio.setInput(4, true);
    gpio.setInput(15, 0);
    expect(gpio.getInputs()).toBe(0x0011);
    gpio.writeRegister(Idio16Reg.IN0_7, 0xff);
    gpio.writeRegister(Idio16Reg.IN8_15, 0xff);
    expect(gpio.readRegister(Idio16Reg.IN0_7)).toBe(0x11);
    expect(gpio.readRegister(Idio16Reg.IN8_15)).toBe(0x00);
  });

  it('rejects bad lines and masks', () => {
    const { gpio } = model();
    expect(() => gpio.setInput(16, 1)).toThrow(RangeError);
    expect(() => gpio.setInput(-1, 1)).toThrow(RangeError);
    expect(() => gpio.setInput(1.5, 1)).toThrow(RangeError);
    expect(() => gpio.setInputs(0x10000)).toThrow(RangeError);
    expect(() => gpio.setInputs(Number.NaN)).toThrow(RangeError);
  });

  it('raises a change-of-state interrupt only while enabled; a write to 0x1 clears it', () => {
    const { gpio, line } = model();
    gpio.setInput(0, 1); // IRQ disabled: nothing latched
    expect(gpio.readRegister(Idio16Reg.IRQ_STATUS)).toBe(0);
    expect(line).toEqual([]);

    expect(gpio.readRegister(Idio16Reg.IRQ_CTL)).toBe(0); // read = enable
    gpio.setInput(1, 1);
    expect(line).toEqual([true]);
    // Both Linux handlers' checks: bit 2, and bit 0 or 1.
    const status = gpio.readRegister(Idio16Reg.IRQ_STATUS);
    expect(status).toBe(IrqStatus.PENDING | IrqStatus.GROUP0_7);
    gpio.setInput(9, 1); // still pending: no second edge, group latched
    expect(line).toEqual([true]);
    expect(gpio.readRegister(Idio16Reg.IRQ_STATUS)).toBe(IrqStatus.PENDING | IrqStatus.GROUP0_7 | IrqStatus.GROUP8_15);

    gpio.writeRegister(Idio16Reg.IN0_7, 0); // clear
    expect(line).toEqual([true, false]);
    expect(gpio.readRegister(Idio16Reg.IRQ_STATUS)).toBe(0);
    gpio.setInputs(gpio.getInputs()); // same level: no change of state
    expect(line).toEqual([true, false]);
    gpio.setInput(9, 0);
    expect(line).toEqual([true, false, true]);
    expect(gpio.state().interrupts).toBe(2);

    gpio.writeRegister(Idio16Reg.IRQ_CTL, 0); // write = disable: the line falls
    expect(line).toEqual([true, false, true, false]);
    gpio.setInput(2, 1);
    expect(line.length).toBe(4);
  });

  it('tracks the input filter control (read activates, write deactivates)', () => {
    const { gpio } = model();
    gpio.writeRegister(Idio16Reg.FILTER_CTL, 0);
    expect(gpio.state().filtersActive).toBe(false);
    gpio.readRegister(Idio16Reg.FILTER_CTL);
    expect(gpio.state().filtersActive).toBe(true);
  });

  it('reads 0 and ignores writes past the registers', () => {
    const { gpio } = model();
    gpio.writeRegister(0x7, 0xff);
    gpio.writeRegister(0xff, 0xff);
    expect(gpio.readRegister(0x7)).toBe(0);
    expect(gpio.readRegister(0xff)).toBe(0);
    expect(gpio.getOutputs()).toBe(0);
  });

  it('reset returns every register to power-on but keeps the input pins', () => {
    const { gpio, line } = model();
    const outputs: number[] = [];
    gpio.on('outputs', (s) => outputs.push(s));
    gpio.writeRegister(Idio16Reg.OUT0_7, 0xff);
    gpio.writeRegister(Idio16Reg.FILTER_CTL, 0);
    gpio.readRegister(Idio16Reg.IRQ_CTL);
    gpio.setInputs(0x1234);
    gpio.reset();
    expect(line).toEqual([true, false]);
    expect(outputs).toEqual([0xff, 0]);
    expect(gpio.state()).toMatchObject({
      outputs: 0,
      inputs: 0x1234,
      irqEnabled: false,
      irqPending: false,
      irqStatus: 0,
      filtersActive: true,
    });
  });
});
