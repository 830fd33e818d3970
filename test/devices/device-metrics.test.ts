/**
 * The built-in devices' metrics: NVMe commands, errors, bytes and latency per
 * queue (driven through the test NVMe host), GPIO line changes (the guest's
 * outputs and the host's inputs).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MetricsRegistry } from '../../server/metrics/index.js';
import { createGpioDevice } from '../../devices/gpio/index.js';
import { IDIO16_BAR_INDEX, Idio16Reg } from '../../devices/gpio/registers.js';
import { expectOk, GPA, Layout, NvmeTestHost } from './nvme-driver.js';

function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$/.exec(line);
    if (m?.[1] !== name) continue;
    const got = Object.fromEntries(
      [...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((x): [string, string] => [x[1] ?? '', x[2] ?? '']),
    );
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

let host: NvmeTestHost | undefined;
afterEach(async () => {
  await host?.stop();
  host = undefined;
});

describe('NVMe metrics', () => {
  it('count commands, errors, bytes and latency per queue', async () => {
    const registry = new MetricsRegistry({ processMetrics: false });
    host = await NvmeTestHost.start({
      name: 'nvme-m',
      namespaces: [{ size: 1 << 20, lbaSize: 512 }],
      metrics: registry.device('nvme-m'),
      pollMicros: 0,
    });
    await host.enable();
    await host.createIoQueues();
    const data = GPA + BigInt(Layout.DATA);
    expectOk(await host.io(host.rw(1, 1, 0, 8, data))); // write 4 KiB
    expectOk(await host.io(host.rw(2, 1, 0, 8, data))); // read 4 KiB
    expectOk(await host.io(host.rw(2, 1, 8, 1, data))); // read 512 bytes
    expect((await host.io(host.rw(2, 1, 1 << 20, 1, data))).status).not.toBe(0); // LBA out of range

    const text = await registry.text();
    const m = (name: string, labels: Record<string, string>): number | undefined =>
      sample(text, name, { device: 'nvme-m', ...labels });
    expect(m('vfio_user_nvme_commands_total', { queue: '1', op: 'write' })).toBe(1);
    expect(m('vfio_user_nvme_commands_total', { queue: '1', op: 'read' })).toBe(3);
    expect(m('vfio_user_nvme_command_errors_total', { queue: '1' })).toBe(1);
    expect(m('vfio_user_nvme_bytes_total', { queue: '1', direction: 'write' })).toBe(4096);
    expect(m('vfio_user_nvme_bytes_total', { queue: '1', direction: 'read' })).toBe(4096 + 512);
    expect(m('vfio_user_nvme_command_seconds_count', { queue: '1' })).toBe(4);
    expect(m('vfio_user_nvme_command_seconds_bucket', { queue: '1', le: '+Inf' })).toBe(4);
    expect(m('vfio_user_nvme_commands_total', { queue: '0', op: 'admin' })).toBeGreaterThanOrEqual(3);
    expect(m('vfio_user_nvme_doorbells_total', { via: 'mmio' })).toBeGreaterThanOrEqual(4);
  });
});

describe('GPIO metrics', () => {
  it('count every line the guest or the host flips', async () => {
    const registry = new MetricsRegistry({ processMetrics: false });
    const { device, gpio } = createGpioDevice({ name: 'gpio-m', barType: 'mem32', metrics: registry.device('gpio-m') });
    try {
      // The guest drives OUT0 and OUT9 high (output registers OUT0_7 and OUT8_15), then OUT0 low.
      await device.regionWrite(IDIO16_BAR_INDEX, BigInt(Idio16Reg.OUT0_7), new Uint8Array([0x01]));
      await device.regionWrite(IDIO16_BAR_INDEX, BigInt(Idio16Reg.OUT8_15), new Uint8Array([0x02]));
      await device.regionWrite(IDIO16_BAR_INDEX, 0n, new Uint8Array([0x00]));
      gpio.setInput(3, 1);
      gpio.setInput(3, 0);
      gpio.setInput(3, 0); // no change
      const text = await registry.text();
      const m = (line: string): number | undefined =>
        sample(text, 'vfio_user_gpio_line_changes_total', { device: 'gpio-m', line });
      expect(m('OUT0')).toBe(2);
      expect(m('OUT9')).toBe(1);
      expect(m('OUT1')).toBe(0);
      expect(m('IIN3')).toBe(2);
    } finally {
      device.close();
    }
  });
});
