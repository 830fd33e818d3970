/**
 * The PCI-IDIO-16 migrated between two processes: the source card runs in
 * this process, the destination is the daemon (`vfio-user-ts serve -d gpio`)
 * in a child process. A guest program (the client) sets outputs, enables the
 * change-of-state interrupt, turns the input filters off and takes an
 * interrupt it does not acknowledge; after migrate() the daemon's card has all
 * of it (read over vfio-user and over its control socket), and once the guest
 * acknowledges, a new input change on the destination interrupts it again.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { migrate, MigrationState, VfioUserClient } from '../../client/index.js';
import {
  createGpioDevice,
  gpioControlRequest,
  IrqStatus,
  Idio16Reg,
  type GpioDevice,
} from '../../devices/gpio/index.js';
import { IrqSetFlag, PciIrq, PciRegion } from '../../protocol/constants.js';
import { startDevice, testLogger, type RunningDevice } from '../helpers/harness.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { runDaemon, type DaemonProcess } from '../cli/daemon-process.js';

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

describe('PCI-IDIO-16 migration between two processes', { timeout: 60_000 }, () => {
  let dir: TempDir;
  let source: GpioDevice;
  let running: RunningDevice<GpioDevice['device']>;
  let daemon: DaemonProcess | undefined;

  beforeEach(async () => {
    dir = tempDir('vfu-gpio-mig-');
    source = createGpioDevice({ name: 'gpio-source', log: testLogger() });
    running = await startDevice(source.device);
  });
  afterEach(async () => {
    await running.stop();
    source.device.close();
    if (daemon) {
      daemon.kill('SIGKILL');
      await daemon.exited;
      daemon = undefined;
    }
    dir.remove();
  });

  it('outputs, IRQ enable, pending status and filter setting arrive; interrupts are delivered after resume', async () => {
    const sock = dir.file('destination.sock');
    const control = `${sock}.control`;
    daemon = runDaemon(['serve', '--log-format', 'json', '--device', 'gpio', '--socket', sock]);
    await daemon.waitFor(/"msg":"device ready"/);

    // The guest on the source: outputs, IRQ on, filters off, an input change it has not acknowledged.
    const a = await running.connect();
    await a.enableIrqs(PciIrq.INTX, 1);
    await writeByte(a, Idio16Reg.OUT0_7, 0xef);
    await writeByte(a, Idio16Reg.OUT8_15, 0xbe);
    expect(await readByte(a, Idio16Reg.IRQ_CTL)).toBe(0); // enables the IRQ
    await writeByte(a, Idio16Reg.FILTER_CTL, 0); // filters off
    source.gpio.setInput(3, 1);
    expect(await a.waitForIrq(PciIrq.INTX, 0, 2000)).toBe(1);
    const before = source.gpio.state();
    expect(before).toMatchObject({ outputs: 0xbeef, irqEnabled: true, irqPending: true, filtersActive: false });

    // The destination, as a VMM realizes it: connected, INTx eventfd installed.
    const b = await VfioUserClient.connect(sock, { timeoutMs: 5000 });
    try {
      await b.enableIrqs(PciIrq.INTX, 1);
      expect((await gpioControlRequest(control, { op: 'get' })).outputs).toBe(0);

      const report = await migrate(a, b);
      expect(report.stopCopyBytes).toBeGreaterThan(0);
      expect(await a.migrationState()).toBe(MigrationState.STOP);
      expect(await b.migrationState()).toBe(MigrationState.RUNNING);

      // Over vfio-user: the registers the guest reads.
      expect(await readByte(b, Idio16Reg.OUT0_7)).toBe(0xef);
      expect(await readByte(b, Idio16Reg.OUT8_15)).toBe(0xbe);
      expect(await readByte(b, Idio16Reg.IRQ_STATUS)).toBe(IrqStatus.PENDING | IrqStatus.GROUP0_7);
      // Over the control socket: what the daemon's host side sees.
      expect(await gpioControlRequest(control, { op: 'get' })).toMatchObject({
        outputs: 0xbeef,
        irqEnabled: true,
        irqPending: true,
        filtersActive: false,
      });
      // The line is still up (unacknowledged): a further change raises nothing new.
      await gpioControlRequest(control, { op: 'set', line: 9, value: 1 });
      await new Promise((r) => setTimeout(r, 100));
      expect(b.irqCount(PciIrq.INTX, 0)).toBe(0);

      // The guest acknowledges (clear, then the VMM unmasks at EOI); the next change interrupts it.
      await writeByte(b, Idio16Reg.IN0_7, 0);
      await unmaskIntx(b);
      expect(await readByte(b, Idio16Reg.IRQ_STATUS)).toBe(0);
      await gpioControlRequest(control, { op: 'set', line: 4, value: 1 });
      expect(await b.waitForIrq(PciIrq.INTX, 0, 2000)).toBe(1);
      expect(await readByte(b, Idio16Reg.IRQ_STATUS)).toBe(IrqStatus.PENDING | IrqStatus.GROUP0_7);
    } finally {
      b.close();
    }
  });
});
