/**
 * The NVMe controller under Linux's own nvme driver in a real QEMU guest:
 * the driver binds, the namespace has the configured size, O_DIRECT writes
 * land in the backing file and read back, the data survives a server restart
 * and a new boot, I/O runs on one queue per vCPU (-smp 2), and all of it also
 * works with fd-less guest RAM (DMA_READ/DMA_WRITE messages).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { NvmeController, type NvmeControllerOptions } from '../../devices/nvme/index.js';
import { createLogger } from '../../server/log.js';
import { serve, type DeviceServer } from '../../server/server.js';
import { runGuest, type GuestResult } from '../../guest-kit/boot.js';
import { guestTest } from './guest-test.js';
import { fileBytes } from '../helpers/file-bytes.js';

const SIZE = 64 << 20;
/** Where the guest writes the pattern (bytes into the namespace). */
const OFFSET = 1 << 20;
const PATTERN = randomBytes(1 << 20);
const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

const log = createLogger({ level: (process.env.TEST_LOG_LEVEL as 'debug' | undefined) ?? 'silent', pretty: false });

/** Wait for the namespace, report driver and size. */
const PROBE = [
  'for i in $(seq 1 100); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done',
  'echo "RESULT driver=$(basename "$(readlink /sys/class/nvme/nvme0/device/driver)")"',
  'echo "RESULT sectors=$(cat /sys/block/nvme0n1/size)"',
  'echo "RESULT lbasize=$(cat /sys/block/nvme0n1/queue/logical_block_size)"',
].join('\n');

/** Write /pattern.bin at OFFSET with O_DIRECT from every CPU in turn, then read it back with O_DIRECT. */
function writeScript(cpus: number): string {
  const lines = [PROBE];
  // 16 x 64 KiB; CPU i writes its share so each hardware queue sees I/O.
  const per = 16 / cpus;
  for (let cpu = 0; cpu < cpus; cpu++) {
    lines.push(
      `taskset ${1 << cpu} dd if=/pattern.bin of=/dev/nvme0n1 bs=64k skip=${cpu * per} seek=${OFFSET / 65536 + cpu * per} count=${per} oflag=direct conv=notrunc 2>/dev/null || echo "RESULT error=write-cpu${cpu}"`,
    );
  }
  lines.push('sync');
  for (let cpu = 0; cpu < cpus; cpu++) {
    lines.push(
      `taskset ${1 << cpu} dd if=/dev/nvme0n1 of=/tmp/back${cpu} bs=64k skip=${OFFSET / 65536} count=16 iflag=direct 2>/dev/null || echo "RESULT error=read-cpu${cpu}"`,
    );
    lines.push(`cmp /pattern.bin /tmp/back${cpu} && echo "RESULT readback${cpu}=ok"`);
  }
  lines.push('grep nvme0q /proc/interrupts');
  lines.push('if dmesg | grep -q "unable to set dbbuf"; then echo "RESULT dbbuf=off"; else echo "RESULT dbbuf=on"; fi');
  return lines.join('\n');
}

const READ_SCRIPT = [
  PROBE,
  `dd if=/dev/nvme0n1 of=/tmp/back bs=64k skip=${OFFSET / 65536} count=16 iflag=direct 2>/dev/null`,
  'echo "RESULT md5=$(md5sum /tmp/back | cut -d" " -f1)"',
].join('\n');

describe('NVMe controller under the Linux nvme driver', () => {
  let dir: string;
  let image: string;
  let nvme: NvmeController | undefined;
  let server: DeviceServer | undefined;
  let sock: string;

  async function start(extra: Partial<NvmeControllerOptions> = {}): Promise<NvmeController> {
    nvme = new NvmeController({
      name: 'nvme-guest',
      namespaces: [{ path: image, size: SIZE, lbaSize: 512 }],
      serial: 'GUEST0001',
      queues: 4,
      log,
      ...extra,
    });
    server = await serve(nvme.device, { socketPath: sock, log });
    return nvme;
  }

  async function stop(): Promise<void> {
    await server?.close();
    await nvme?.close();
    server = undefined;
    nvme = undefined;
  }

  function expectOk(r: GuestResult, keys: string[]): void {
    const context = `\n${r.serial}`;
    expect(r.code, context).toBe(0);
    expect(r.results.error, context).toBeUndefined();
    expect(r.results.driver, context).toBe('nvme');
    expect(r.results.sectors, context).toBe(String(SIZE / 512));
    for (const k of keys) expect(r.results[k], `${k}${context}`).toBe('ok');
  }

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nvme-guest-'));
    image = join(dir, 'disk.img');
    sock = join(dir, 'nvme.sock');
  });

  afterAll(async () => {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  });

  guestTest(
    'binds, writes with O_DIRECT from 2 vCPUs on 2 I/O queues, reads back; the file holds the data',
    async () => {
      // A fixed 50 ms polling window: every gap between the guest's commands is inside it.
      // 'refuse': QEMU's memory-backend-memfd is sealed by default, so its RAM is still mapped.
      const ctrl = await start({ pollMicros: 50_000, pollAdaptive: false, unsealedDmaFds: 'refuse' });
      const r = await runGuest({
        devices: [{ socketPath: sock }],
        modules: ['nvme'],
        smp: 2,
        files: { 'pattern.bin': PATTERN },
        script: writeScript(2),
        timeoutMs: 150_000,
      });
      expectOk(r, ['readback0', 'readback1']);
      expect(r.results.dbbuf, 'Linux uses shadow doorbells on shared guest RAM').toBe('on');
      expect(md5(fileBytes(image, OFFSET, PATTERN.length))).toBe(md5(PATTERN));
      // One I/O queue per vCPU, each used.
      const stats = ctrl.queueStats();
      const io = stats.filter((s) => s.sqid > 0);
      expect(io.length, JSON.stringify(stats)).toBeGreaterThanOrEqual(2);
      expect(
        io.every((s) => s.fetched > 0),
        JSON.stringify(stats),
      ).toBe(true);
      // Linux honours the "do not ring" EventIdx: submissions were taken from the shadow tails.
      expect(ctrl.doorbellStats().polled, JSON.stringify(ctrl.doorbellStats())).toBeGreaterThan(0);
      await stop();
    },
  );

  guestTest('after a server restart and a new boot the data is still there', async () => {
    // The previous test wrote it; run alone, write it here first.
    if (md5(fileBytes(image, OFFSET, PATTERN.length)) !== md5(PATTERN)) {
      rmSync(image, { force: true });
      const seed = new NvmeController({ name: 'seed', namespaces: [{ path: image, size: SIZE }] });
      await seed.close();
      const fd = openSync(image, 'r+');
      const { writeSync } = await import('node:fs');
      writeSync(fd, PATTERN, 0, PATTERN.length, OFFSET);
      closeSync(fd);
    }
    await start();
    const r = await runGuest({
      devices: [{ socketPath: sock }],
      modules: ['nvme'],
      script: READ_SCRIPT,
      timeoutMs: 150_000,
    });
    expectOk(r, []);
    expect(r.results.md5, r.serial).toBe(md5(PATTERN));
    await stop();
  });

  guestTest('works with fd-less guest RAM (DMA_READ/DMA_WRITE messages), 2 vCPUs', async () => {
    rmSync(image, { force: true });
    const ctrl = await start();
    const r = await runGuest({
      devices: [{ socketPath: sock }],
      modules: ['nvme'],
      smp: 2,
      sharedMemory: false,
      files: { 'pattern.bin': PATTERN },
      script: writeScript(2),
      timeoutMs: 150_000,
    });
    expectOk(r, ['readback0', 'readback1']);
    expect(r.results.dbbuf, 'shadow doorbells are refused without fd-backed RAM').toBe('off');
    expect(md5(readFileSync(image).subarray(OFFSET, OFFSET + PATTERN.length))).toBe(md5(PATTERN));
    expect(ctrl.queueStats().filter((s) => s.sqid > 0 && s.fetched > 0).length).toBeGreaterThanOrEqual(2);
    await stop();
  });

  guestTest(
    'serves unsealed shared RAM by messages with unsealedDmaFds "messages" (a client cannot SIGBUS us)',
    async () => {
      rmSync(image, { force: true });
      const ctrl = await start({ unsealedDmaFds: 'messages' });
      // Watch the DMA space while the guest runs (QEMU unmaps everything when it goes).
      let maps = 0;
      let fdMaps = 0;
      const watch = setInterval(() => {
        const regions = ctrl.device.dma.regions;
        maps = Math.max(maps, regions.length);
        fdMaps = Math.max(fdMaps, regions.filter((g) => g.mapping !== undefined).length);
      }, 10);
      let r: GuestResult;
      try {
        r = await runGuest({
          devices: [{ socketPath: sock }],
          modules: ['nvme'],
          sharedMemory: 'unsealed',
          files: { 'pattern.bin': PATTERN },
          script: writeScript(1),
          timeoutMs: 150_000,
        });
      } finally {
        clearInterval(watch);
      }
      expectOk(r, ['readback0']);
      expect(maps, 'QEMU mapped its RAM').toBeGreaterThan(0);
      expect(fdMaps, 'nothing of the unsealed memfd is mapped').toBe(0);
      expect(r.results.dbbuf, 'no fd-backed pages, so no shadow doorbells').toBe('off');
      expect(md5(readFileSync(image).subarray(OFFSET, OFFSET + PATTERN.length))).toBe(md5(PATTERN));
      await stop();
    },
  );
});
