/**
 * Metrics: the registry's text exposition (counters, gauges, precomputed
 * histograms, the device label, name rules), and a served PciDevice's
 * metrics as a real client drives it over the socket (messages by command,
 * errors by errno, interrupts, DMA bytes by path, connection state and
 * count, a client turned away), scraped over HTTP.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MetricsRegistry, serveMetrics, NO_METRICS, type MetricsHttpServer } from '../../server/metrics/index.js';
import { PciIrq, PciRegion } from '../../protocol/constants.js';
import { VfioUserClient, VfioUserClientError } from '../../client/index.js';
import { PciTestDevice } from '../helpers/pci-test-device.js';
import { Reg } from '../helpers/test-device.js';
import { startDevice, type RunningDevice } from '../helpers/harness.js';

/** The value of one sample line (`name{labels} value`), or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m?.[1] !== name) continue;
    const got = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x): [string, string] => [x[1] ?? '', x[2] ?? '']),
    );
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

describe('MetricsRegistry', () => {
  it('exposes counters, gauges and histograms with the device label, in Prometheus text', async () => {
    const registry = new MetricsRegistry({ processMetrics: false });
    const a = registry.device('dev-a');
    const b = registry.device('dev-b');
    const resets = a.counter('demo_resets_total', 'Resets', ['reason']);
    resets.labels('client').inc();
    resets.labels('client').inc(2);
    b.counter('demo_resets_total', 'Resets', ['reason']).labels('flr').inc();
    const depth = a.gauge('demo_queue_depth', 'Depth');
    depth.set(7);
    depth.dec(2);
    const lat = a.histogram('demo_op_seconds', 'Op time', { buckets: [0.001, 0.01, 0.1] });
    for (const v of [0.0005, 0.002, 0.002, 0.05, 3]) lat.observe(v);
    let collected = 0;
    a.onCollect(() => {
      collected++;
      depth.inc();
    });

    const text = await registry.text();
    expect(collected).toBe(1);
    expect(text).toContain('# TYPE demo_resets_total counter');
    expect(sample(text, 'demo_resets_total', { device: 'dev-a', reason: 'client' })).toBe(3);
    expect(sample(text, 'demo_resets_total', { device: 'dev-b', reason: 'flr' })).toBe(1);
    expect(text).toContain('# TYPE demo_queue_depth gauge');
    expect(sample(text, 'demo_queue_depth', { device: 'dev-a' })).toBe(6);
    expect(text).toContain('# TYPE demo_op_seconds histogram');
    expect(sample(text, 'demo_op_seconds_bucket', { device: 'dev-a', le: '0.001' })).toBe(1);
    expect(sample(text, 'demo_op_seconds_bucket', { device: 'dev-a', le: '0.01' })).toBe(3);
    expect(sample(text, 'demo_op_seconds_bucket', { device: 'dev-a', le: '0.1' })).toBe(4);
    expect(sample(text, 'demo_op_seconds_bucket', { device: 'dev-a', le: '+Inf' })).toBe(5);
    expect(sample(text, 'demo_op_seconds_count', { device: 'dev-a' })).toBe(5);
    expect(sample(text, 'demo_op_seconds_sum', { device: 'dev-a' })).toBeCloseTo(3.0545, 6);
  });

  it('refuses bad names, a declared device label, and a name reused with another type or labels', () => {
    const m = new MetricsRegistry({ processMetrics: false }).device('d');
    expect(() => m.counter('bad name', 'x')).toThrow(/not a Prometheus name/);
    expect(() => m.counter('x_total', 'x', ['device'])).toThrow(/added for you/);
    m.counter('shared_total', 'x', ['a']);
    expect(() => m.gauge('shared_total', 'x', ['a'])).toThrow(/already a counter/);
    expect(() => m.counter('shared_total', 'x', ['b'])).toThrow(/already a counter/);
    expect(() => m.counter('shared_total', 'x', ['a']).labels('1', '2')).toThrow(/label value/);
    expect(() => m.counter('shared_total', 'x', ['a']).inc()).toThrow(/has labels/);
    expect(() => m.histogram('h_seconds', 'x', { buckets: [1, 1] })).toThrow(/increasing/);
  });

  it('NO_METRICS accepts every call and does nothing', () => {
    expect(NO_METRICS.enabled).toBe(false);
    const c = NO_METRICS.counter('whatever', 'x', ['a']).labels('1');
    c.inc();
    NO_METRICS.histogram('h', 'x').observe(1);
    NO_METRICS.onCollect(() => {
      throw new Error('never called');
    })();
  });
});

describe('a served device with metrics', () => {
  let running: RunningDevice<PciTestDevice> | undefined;
  let http: MetricsHttpServer | undefined;
  afterEach(async () => {
    await http?.close();
    await running?.stop();
    http = undefined;
    running = undefined;
  });

  it('counts what the client sends and what the device does, served over HTTP', async () => {
    const metrics = new MetricsRegistry();
    running = await startDevice(new PciTestDevice('metered'), { metrics });
    http = await serveMetrics(metrics, { host: '127.0.0.1', port: 0 });
    const scrape = async (): Promise<string> => {
      const res = await fetch(http!.url);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
      return res.text();
    };
    expect(sample(await scrape(), 'vfio_user_connection_state', { device: 'metered', state: 'idle' })).toBe(1);

    const client = await running.connect();
    await client.getDeviceInfo();
    await client.getDeviceInfo();
    // Past BAR0's end: EINVAL from the connection's range check.
    await expect(client.regionRead(PciRegion.BAR0, 0x2000, 4)).rejects.toBeInstanceOf(VfioUserClientError);
    // Two interrupts on MSI-X vector 1.
    await client.enableIrqs(PciIrq.MSIX, 4);
    await client.barWrite32(PciRegion.BAR0, Reg.IRQ, 1);
    await client.barWrite32(PciRegion.BAR0, Reg.IRQ, 1);
    await client.waitForIrq(PciIrq.MSIX, 1);
    // DMA: 4 KiB from mapped memory into message-only memory (read mapped, write by messages).
    const mem = client.createGuestMemory(0x1000);
    await client.dmaMap({ addr: 0x100000n, backing: mem });
    await client.dmaMap({ addr: 0x200000n, size: 0x1000n });
    await client.enableDevice();
    await client.barWrite32(PciRegion.BAR0, Reg.DMA_SRC_LO, 0x100000);
    await client.barWrite32(PciRegion.BAR0, Reg.DMA_DST_LO, 0x200000);
    await client.barWrite32(PciRegion.BAR0, Reg.DMA_LEN, 0x1000);
    await client.barWrite32(PciRegion.BAR0, Reg.DOORBELL, 1);
    await client.waitForIrq(PciIrq.MSIX, 0);
    expect(await client.barRead32(PciRegion.BAR0, Reg.STATUS)).toBe(1);

    // A second client is turned away while this one is attached.
    await expect(VfioUserClient.connect(running.socketPath, { timeoutMs: 3000 })).rejects.toMatchObject({
      code: 'EBUSY',
    });

    const text = await scrape();
    const m = (name: string, labels: Record<string, string> = {}): number | undefined =>
      sample(text, name, { device: 'metered', ...labels });
    expect(m('vfio_user_messages_total', { command: 'VERSION' })).toBe(1);
    expect(m('vfio_user_messages_total', { command: 'DEVICE_GET_INFO' })).toBe(2);
    expect(m('vfio_user_messages_total', { command: 'REGION_READ' })).toBeGreaterThanOrEqual(2);
    expect(m('vfio_user_message_errors_total', { errno: 'EINVAL' })).toBe(1);
    expect(m('vfio_user_interrupts_total', { index: 'msix' })).toBe(3);
    expect(m('vfio_user_interrupts_total', { index: 'intx' })).toBe(0);
    expect(m('vfio_user_dma_bytes_total', { path: 'mapped', op: 'read' })).toBe(0x1000);
    expect(m('vfio_user_dma_bytes_total', { path: 'messages', op: 'write' })).toBe(0x1000);
    expect(m('vfio_user_dma_requests_total', { command: 'DMA_WRITE', result: 'ok' })).toBe(1);
    expect(m('vfio_user_dma_maps')).toBe(2);
    expect(m('vfio_user_connection_state', { state: 'ready' })).toBe(1);
    expect(m('vfio_user_connection_state', { state: 'idle' })).toBe(0);
    expect(m('vfio_user_connections_total')).toBe(1);
    expect(m('vfio_user_connections_rejected_total')).toBe(1);
    // prom-client's process metrics come along.
    expect(text).toContain('process_cpu_user_seconds_total');

    client.close();
    await running.idle();
    await running.server.connection?.closed;
    const after = await scrape();
    expect(sample(after, 'vfio_user_connection_state', { device: 'metered', state: 'idle' })).toBe(1);
    expect((await fetch(http.url.replace('/metrics', '/other'))).status).toBe(404);
  });
});
