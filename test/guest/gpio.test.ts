/**
 * The PCI-IDIO-16 under Linux's own driver in a real QEMU guest: the driver
 * binds, a 32-line gpiochip appears, outputs set through /sys/class/gpio reach
 * the host, inputs set by the host (through the control socket, as a person
 * with the CLI would) reach the guest, and host-side input changes raise the
 * device's interrupt count in /proc/interrupts. Once with BAR2 in I/O space
 * (like the real card), once in memory space.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createGpioDevice,
  defaultControlPath,
  GpioControlClient,
  runGpioCli,
  startGpioControl,
  type GpioControlServer,
  type GpioDevice,
} from '../../devices/gpio/index.js';
import { serve } from '../../server/server.js';
import { createLogger } from '../../server/log.js';
import { startGuest, type Guest, type GuestResult } from '../../guest-kit/boot.js';
import { GPIO_GUEST_SCRIPT, INPUT_PATTERN, OUTPUT_PATTERN } from './gpio-guest-script.js';
import { tempSocketPath } from '../helpers/temp.js';

const hex = (n: number): string => `0x${n.toString(16).padStart(4, '0')}`;
/** IORESOURCE_IO in /sys/bus/pci/devices/.../resource flags. */
const IORESOURCE_IO = 0x100;

describe.each(['io', 'mem32'] as const)('PCI-IDIO-16 (BAR2 %s) in a QEMU guest', (barType) => {
  let gpio: GpioDevice;
  let server: { close(): Promise<void> };
  let control: GpioControlServer;
  let watcher: GpioControlClient;
  let sock: { path: string; remove(): void };
  let guest: Guest;
  const outputEvents: number[] = [];
  const watchedOutputs: number[] = [];

  beforeAll(async () => {
    const log = createLogger({ level: (process.env.TEST_LOG_LEVEL as 'debug' | undefined) ?? 'silent', pretty: false });
    gpio = createGpioDevice({ name: `gpio-${barType}`, log, barType });
    gpio.gpio.on('outputs', (state) => outputEvents.push(state));
    sock = tempSocketPath('gpio');
    server = await serve(gpio.device, { socketPath: sock.path, log });
    control = await startGpioControl(gpio.gpio, defaultControlPath(sock.path), { log });
    watcher = await GpioControlClient.connect(control.path);
    watcher.onEvent = (e) => {
      if (e.event === 'outputs') watchedOutputs.push(e.outputs);
    };
    await watcher.request({ op: 'watch' });
    guest = await startGuest({
      devices: [{ socketPath: sock.path }],
      modules: ['gpio-pci-idio-16'],
      script: GPIO_GUEST_SCRIPT,
      timeoutMs: 240_000,
    });
  });

  afterAll(async () => {
    guest?.kill();
    await guest?.exited;
    watcher?.close();
    await control?.close();
    await server?.close();
    gpio?.device.close();
    sock?.remove();
  });

  /** Wait for a step marker; fail fast with the serial log if the script gave up. */
  async function step(name: string): Promise<void> {
    const m = await guest.waitForLine(new RegExp(`^GPIO-STEP (${name}|failed)`), 200_000);
    if (m[1] === 'failed') {
      const result: GuestResult = await guest.exited;
      throw new Error(`guest script failed: ${result.results.error}\n${result.serial}`);
    }
  }

  /** The CLI against the control socket, as `vfio-user-ts gpio ...` runs it. */
  async function cli(...args: string[]): Promise<string> {
    let out = '';
    let err = '';
    const code = await runGpioCli([args[0]!, '--control', control.path, ...args.slice(1)], {
      stdout: (t) => (out += t),
      stderr: (t) => (err += t),
    });
    expect(code, err).toBe(0);
    return out;
  }

  it('binds pci-idio-16, drives the outputs, reads the inputs and takes interrupts', async () => {
    await step('outputs-set');
    // The host sees exactly the pattern the guest wrote (API, event, control socket).
    expect(hex(gpio.gpio.getOutputs())).toBe(hex(OUTPUT_PATTERN));
    expect(outputEvents.at(-1)).toBe(OUTPUT_PATTERN);
    expect(await cli('get')).toMatch(new RegExp(`^outputs=${hex(OUTPUT_PATTERN)} `));

    await cli('set', '--inputs', hex(INPUT_PATTERN));
    guest.write('inputs\n');

    await step('irq-ready 1');
    const enabledAfterEdge = gpio.gpio.state().irqEnabled;
    await cli('set', `IIN0=${INPUT_PATTERN & 1 ? 0 : 1}`); // IIN0 (the lower group) toggles
    guest.write('irq1\n');
    await step('irq-ready 2');
    gpio.gpio.setInput(9, !(INPUT_PATTERN & (1 << 9))); // IIN9 (the upper group) toggles, through the API
    guest.write('irq2\n');
    await step('done');

    const result = await guest.exited;
    const r = result.results;
    const context = `\n${result.serial}`;
    expect(r.driver, context).toBe('pci-idio-16');
    expect(r.ngpio, context).toBe('32');
    const barFlags = Number(r.bar2?.split(/\s+/)[2]);
    expect((barFlags & IORESOURCE_IO) !== 0, `BAR2 resource: ${r.bar2}`).toBe(barType === 'io');
    expect(r.readback, context).toBe(hex(OUTPUT_PATTERN));
    // Not .at(-1): the guest's power-off resets the card (outputs 0), and that event may already be in.
    expect(watchedOutputs).toContain(OUTPUT_PATTERN);
    expect(r.inputs, context).toBe(hex(INPUT_PATTERN));
    expect(enabledAfterEdge, 'the driver enables the IRQ when an edge is requested').toBe(true);
    const before = Number(r.irq_before);
    expect(Number(r.irq_after_1), context).toBeGreaterThanOrEqual(before + 1);
    expect(Number(r.irq_after_2), context).toBeGreaterThanOrEqual(before + 2);
    expect(Number(r.edges), context).toBeGreaterThanOrEqual(2);
    expect(r.iin0_1, context).toBe(String(Number(!(INPUT_PATTERN & 1))));
    expect(r.iin9_1, context).toBe(String((INPUT_PATTERN >> 9) & 1));
    expect(r.iin9_2, context).toBe(String(Number(!(INPUT_PATTERN & (1 << 9)))));
    expect(gpio.gpio.state().interrupts).toBeGreaterThanOrEqual(2);
    expect(r.exit, context).toBe('0');
  });
});
