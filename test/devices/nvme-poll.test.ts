/**
 * Adaptive shadow-doorbell polling (devices/nvme/sq-poller.ts) on a real
 * socket with a shared-memfd guest: while the controller watches, the host
 * submits without any doorbell message; after the idle window EventIdx asks
 * for doorbells again; a late (stale) MMIO doorbell never replays commands;
 * commands that go to the thread pool and controller resets interleave
 * safely with polling.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { NvmeControllerOptions } from '../../devices/nvme/index.js';
import { pollGroup } from '../../devices/nvme/poll-group.js';
import { tempDir } from '../helpers/temp.js';
import { expectOk, GPA, Layout, NvmeTestHost } from './nvme-driver.js';

const gpa = (off: number): bigint => GPA + BigInt(off);
const SQ1_EVENT_IDX = Layout.EVENT_IDX + 2 * 1 * 4;
const SQ1_SHADOW = Layout.SHADOW_DB + 2 * 1 * 4;

let host: NvmeTestHost;
/** What startPolling set up, undone after each test in reverse (also after a start that failed halfway). */
const cleanups: (() => unknown)[] = [];

async function startPolling(pollMicros: number, extra: Partial<NvmeControllerOptions> = {}): Promise<NvmeTestHost> {
  const dir = tempDir('nvme-poll-');
  cleanups.push(() => dir.remove());
  const started = await NvmeTestHost.start({
    name: 'nvme-poll',
    namespaces: [{ path: dir.file('ns1.img'), size: 4 << 20, lbaSize: 512 }],
    serial: 'POLL0001',
    queues: 1,
    pollMicros,
    ...extra,
  });
  cleanups.push(() => started.stop());
  host = started;
  await host.enable();
  await host.createIoQueues();
  expectOk(await host.enableShadowDoorbells());
  return host;
}

/** Wait until `cond` holds (the poller works on the event loop we share). */
async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

afterEach(async () => {
  for (const undo of cleanups.splice(0).reverse()) await undo();
});

describe('NVMe shadow doorbell polling', () => {
  it('takes submissions from the shadow tail without doorbell messages while I/O flows', async () => {
    await startPolling(1_000_000, { pollAdaptive: false }); // a fixed 1 s window: the whole test stays inside it
    expectOk(await host.io({ opcode: 0x00, nsid: 1 })); // first one after Doorbell Buffer Config rings
    const before = host.nvme.doorbellStats();
    // While polling, EventIdx is tail - 1: the driver's need-event test says "do not ring".
    expect(host.view.getUint32(SQ1_EVENT_IDX, true)).toBe((host.view.getUint32(SQ1_SHADOW, true) - 1) & 0xffff);
    for (let i = 0; i < 100; i++) {
      host.mem.fill(i, Layout.DATA, Layout.DATA + 512);
      expectOk(await host.io(host.rw(1, 1, i, 1, gpa(Layout.DATA)))); // write
      expectOk(await host.io(host.rw(2, 1, i, 1, gpa(Layout.DATA2)))); // read
      expect(host.mem[Layout.DATA2 + 511]).toBe(i);
    }
    const after = host.nvme.doorbellStats();
    expect(after.mmio).toBe(before.mmio); // not one doorbell message for 200 commands
    expect(after.polled - before.polled).toBe(200);
  });

  it('goes back to doorbells after the idle window and still sees every submission', async () => {
    await startPolling(2000, { pollAdaptive: false });
    expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    // Idle: EventIdx = tail again (the next submission must ring).
    await until(
      () => host.view.getUint32(SQ1_EVENT_IDX, true) === host.view.getUint32(SQ1_SHADOW, true),
      'EventIdx re-armed',
    );
    expect(host.nvme.doorbellStats().rearmed).toBeGreaterThan(0);
    const mmio = host.nvme.doorbellStats().mmio;
    const data = randomBytes(4096);
    host.mem.set(data, Layout.DATA);
    expectOk(await host.io(host.rw(1, 1, 16, 8, gpa(Layout.DATA))));
    expect(host.nvme.doorbellStats().mmio).toBe(mmio + 1);
    expectOk(await host.io(host.rw(2, 1, 16, 8, gpa(Layout.DATA2))));
    expect(Buffer.from(host.mem.subarray(Layout.DATA2, Layout.DATA2 + 4096)).equals(data)).toBe(true);
  });

  it('fits the window to the guest: a guest slower than the window is not polled, a quick one is', async () => {
    await startPolling(2000);
    // A slow guest: 25 ms between completion and the next submission.
    for (let i = 0; i < 5; i++) {
      expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(host.nvme.doorbellStats().windowMicros).toBe(0);
    const spun = host.nvme.doorbellStats().spinMicros;
    for (let i = 0; i < 3; i++) {
      expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
      // Right after the completion EventIdx already asks for the next doorbell: no watch.
      expect(host.view.getUint32(SQ1_EVENT_IDX, true)).toBe(host.view.getUint32(SQ1_SHADOW, true));
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(host.nvme.doorbellStats().spinMicros).toBe(spun);
    // A quick guest again: the doorbells keep the estimate current and polling comes back.
    for (let i = 0; i < 60 && host.nvme.doorbellStats().windowMicros === 0; i++)
      expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    expect(host.nvme.doorbellStats().windowMicros).toBeGreaterThan(0);
  });

  it('ignores a late MMIO doorbell that is older than what polling consumed', async () => {
    await startPolling(1_000_000, { pollAdaptive: false });
    for (let i = 0; i < 5; i++) expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    const fetched = host.nvme.queueStats().find((q) => q.sqid === 1)!.fetched;
    // A doorbell message carrying tail 1 arrives after the controller consumed up to 5.
    await host.setReg(0x1000 + 2 * 1 * 4, 1);
    await new Promise((r) => setTimeout(r, 20));
    expect(host.nvme.queueStats().find((q) => q.sqid === 1)!.fetched).toBe(fetched); // nothing replayed
    expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
  });

  it('mixes thread-pool commands and polling, and survives a controller reset while polling', async () => {
    await startPolling(1_000_000, { pollAdaptive: false });
    // Flush and 64 KiB writes go to the thread pool (polling pauses while they run).
    const data = randomBytes(64 << 10);
    host.mem.set(data, Layout.DATA);
    const prpList = new DataView(host.mem.buffer, host.mem.byteOffset + Layout.PRP_LISTS);
    for (let p = 1; p < 16; p++) prpList.setBigUint64((p - 1) * 8, gpa(Layout.DATA + p * 4096), true);
    for (let i = 0; i < 10; i++) {
      expectOk(await host.io(host.rw(1, 1, i * 128, 128, gpa(Layout.DATA), gpa(Layout.PRP_LISTS))));
      expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    }
    const out = new DataView(host.mem.buffer, host.mem.byteOffset + Layout.PRP_LISTS + 4096);
    for (let p = 1; p < 16; p++) out.setBigUint64((p - 1) * 8, gpa(Layout.DATA2 + p * 4096), true);
    expectOk(await host.io(host.rw(2, 1, 9 * 128, 128, gpa(Layout.DATA2), gpa(Layout.PRP_LISTS + 4096))));
    expect(Buffer.from(host.mem.subarray(Layout.DATA2, Layout.DATA2 + data.length)).equals(data)).toBe(true);
    // Reset (CC.EN 1 -> 0) while the poller watches; enable again and poll again.
    await host.disable();
    await host.enable();
    await host.createIoQueues();
    expectOk(await host.enableShadowDoorbells());
    expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    const before = host.nvme.doorbellStats();
    for (let i = 0; i < 10; i++) expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    expect(host.nvme.doorbellStats().polled - before.polled).toBe(10);
  });

  it('with pollMicros 0, every submission rings', async () => {
    await startPolling(0);
    const before = host.nvme.doorbellStats();
    for (let i = 0; i < 10; i++) expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
    const after = host.nvme.doorbellStats();
    expect(after.mmio - before.mmio).toBeGreaterThanOrEqual(10);
    expect(after.polled).toBe(0);
  });

  it('polls two controllers of one process in one loop, neither waiting on the other', async () => {
    await startPolling(1_000_000, { pollAdaptive: false });
    const first = host;
    const dir2 = tempDir('nvme-poll2-');
    const second = await NvmeTestHost.start({
      name: 'nvme-poll-2',
      namespaces: [{ path: dir2.file('ns1.img'), size: 4 << 20 }],
      serial: 'POLL0002',
      queues: 1,
      pollMicros: 1_000_000,
      pollAdaptive: false,
    });
    try {
      await second.enable();
      await second.createIoQueues();
      expectOk(await second.enableShadowDoorbells());
      expectOk(await first.io({ opcode: 0x00, nsid: 1 }));
      expectOk(await second.io({ opcode: 0x00, nsid: 1 }));
      expect(pollGroup.size).toBe(2);
      const before = [first.nvme.doorbellStats(), second.nvme.doorbellStats()];
      for (let i = 0; i < 50; i++) {
        const [a, b] = await Promise.all([first.io({ opcode: 0x00, nsid: 1 }), second.io({ opcode: 0x00, nsid: 1 })]);
        expectOk(a);
        expectOk(b);
      }
      const after = [first.nvme.doorbellStats(), second.nvme.doorbellStats()];
      for (const k of [0, 1]) {
        expect(after[k]!.mmio).toBe(before[k]!.mmio);
        expect(after[k]!.polled - before[k]!.polled).toBe(50);
      }
    } finally {
      await second.stop();
      dir2.remove();
    }
  });

  it('backs off to doorbells while the host is busy, and polls again after', async () => {
    await startPolling(1_000_000); // adaptive (the default): the back-off applies
    try {
      expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
      // A slice that spent 0.9 of its 1 ms descheduled; its time lies far ahead, so the back-off lasts the test.
      pollGroup.backoff.slice(performance.now() + 1e9, 1, 0.9);
      // The watch the first command started may still be in its slice: let it end (the window is
      // 2 ms) so that every command below finds the back-off in force.
      await new Promise((r) => setTimeout(r, 20));
      const before = host.nvme.doorbellStats();
      for (let i = 0; i < 10; i++) {
        expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
        // Right after the completion EventIdx already asks for the next doorbell.
        expect(host.view.getUint32(SQ1_EVENT_IDX, true)).toBe(host.view.getUint32(SQ1_SHADOW, true));
      }
      const during = host.nvme.doorbellStats();
      expect(during.mmio - before.mmio).toBe(10);
      expect(during.polled).toBe(before.polled);
      expect(during.backedOff - before.backedOff).toBeGreaterThanOrEqual(10);
      // The host quietened. Cleared before each command: on a loaded test machine a slice can be
      // descheduled for real and trip the back-off again, which is not what this part checks.
      for (let i = 0; i < 60 && host.nvme.doorbellStats().polled === during.polled; i++) {
        pollGroup.backoff.reset();
        expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
      }
      expect(host.nvme.doorbellStats().polled).toBeGreaterThan(during.polled);
    } finally {
      pollGroup.backoff.reset();
    }
  });

  it('with pollAdaptive false, polls whatever the host load', async () => {
    await startPolling(1_000_000, { pollAdaptive: false });
    try {
      expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
      pollGroup.backoff.slice(performance.now() + 1e9, 1, 0.9);
      const before = host.nvme.doorbellStats();
      for (let i = 0; i < 10; i++) expectOk(await host.io({ opcode: 0x00, nsid: 1 }));
      const after = host.nvme.doorbellStats();
      expect(after.mmio).toBe(before.mmio);
      expect(after.polled - before.polled).toBe(10);
      expect(after.backedOff).toBe(0);
    } finally {
      pollGroup.backoff.reset();
    }
  });

  it('rejects a bad pollMicros', async () => {
    await expect(NvmeTestHost.start({ name: 'x', namespaces: [{ size: 1 << 20 }], pollMicros: -1 })).rejects.toThrow(
      /pollMicros/,
    );
  });
});
