/**
 * Discard under Linux's nvme driver in a real QEMU guest: the guest writes a
 * pattern with O_DIRECT, busybox blkdiscard deallocates the middle of it
 * (Dataset Management, attribute Deallocate), and then the guest reads zeros
 * there and the pattern around it, while on the host the backing file gave
 * those blocks back (st_blocks) and holds zeros in the hole.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { NvmeController } from '../../devices/nvme/index.js';
import { createLogger } from '../../server/log.js';
import { serve, type DeviceServer } from '../../server/server.js';
import { runGuest } from '../../guest-kit/boot.js';
import { guestTest } from './guest-test.js';
import { fileBytes } from '../helpers/file-bytes.js';

const SIZE = 64 << 20;
const MiB = 1 << 20;
/** The pattern (2 MiB) lands at 8 MiB; the guest discards its middle MiB. */
const OFFSET = 8 * MiB;
const PATTERN = randomBytes(2 * MiB);
const HOLE = { offset: OFFSET + MiB / 2, length: MiB };
const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

const log = createLogger({ level: (process.env.TEST_LOG_LEVEL as 'debug' | undefined) ?? 'silent', pretty: false });

const SCRIPT = [
  'for i in $(seq 1 100); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done',
  'busybox --list | grep -qx blkdiscard || echo "RESULT error=no-blkdiscard-applet"',
  'echo "RESULT discard_max=$(cat /sys/block/nvme0n1/queue/discard_max_bytes)"',
  `dd if=/pattern.bin of=/dev/nvme0n1 bs=64k seek=${OFFSET / 65536} count=32 oflag=direct conv=notrunc 2>/dev/null || echo "RESULT error=write"`,
  'sync',
  `blkdiscard -o ${HOLE.offset} -l ${HOLE.length} /dev/nvme0n1 && echo "RESULT discard=ok" || echo "RESULT error=blkdiscard"`,
  `dd if=/dev/nvme0n1 of=/tmp/back bs=64k skip=${OFFSET / 65536} count=32 iflag=direct 2>/dev/null || echo "RESULT error=read"`,
  // Before the hole, the hole, after the hole (64 KiB blocks: 8, 16, 8).
  'echo "RESULT before=$(dd if=/tmp/back bs=64k count=8 2>/dev/null | md5sum | cut -d" " -f1)"',
  'echo "RESULT hole=$(dd if=/tmp/back bs=64k skip=8 count=16 2>/dev/null | md5sum | cut -d" " -f1)"',
  'echo "RESULT after=$(dd if=/tmp/back bs=64k skip=24 count=8 2>/dev/null | md5sum | cut -d" " -f1)"',
].join('\n');

describe('NVMe discard under the Linux nvme driver', () => {
  let dir: string;
  let nvme: NvmeController | undefined;
  let server: DeviceServer | undefined;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nvme-discard-'));
  });

  afterAll(async () => {
    await server?.close();
    await nvme?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  guestTest('blkdiscard punches a hole in the backing file; the guest reads zeros there', async () => {
    const image = join(dir, 'disk.img');
    const sock = join(dir, 'nvme.sock');
    nvme = new NvmeController({
      name: 'nvme-discard',
      namespaces: [{ path: image, size: SIZE, lbaSize: 512 }],
      serial: 'DISCARD01',
      queues: 2,
      log,
    });
    server = await serve(nvme.device, { socketPath: sock, log });
    const r = await runGuest({
      devices: [{ socketPath: sock }],
      modules: ['nvme'],
      files: { 'pattern.bin': PATTERN },
      script: SCRIPT,
      timeoutMs: 150_000,
    });
    await server.close();
    await nvme.close();
    server = undefined;
    nvme = undefined;

    const context = `\n${r.serial}`;
    expect(r.code, context).toBe(0);
    expect(r.results.error, context).toBeUndefined();
    expect(Number(r.results.discard_max), `Linux enabled discard${context}`).toBeGreaterThan(0);
    expect(r.results.discard, context).toBe('ok');
    // The guest: pattern around the hole, zeros in it.
    expect(r.results.before, context).toBe(md5(PATTERN.subarray(0, MiB / 2)));
    expect(r.results.hole, context).toBe(md5(new Uint8Array(MiB)));
    expect(r.results.after, context).toBe(md5(PATTERN.subarray(MiB / 2 + MiB)));
    // The host: 2 MiB were written, 1 MiB of it punched out again (a little slack for file-system metadata).
    const allocated = statSync(image).blocks * 512;
    expect(allocated, `allocated bytes ${allocated}`).toBeGreaterThanOrEqual(MiB);
    expect(allocated, `allocated bytes ${allocated}`).toBeLessThanOrEqual(MiB + 128 * 1024);
    const file = fileBytes(image, OFFSET, PATTERN.length);
    expect(file.subarray(0, MiB / 2).equals(PATTERN.subarray(0, MiB / 2))).toBe(true);
    expect(file.subarray(MiB / 2, MiB / 2 + MiB).every((b) => b === 0)).toBe(true);
    expect(file.subarray(MiB / 2 + MiB).equals(PATTERN.subarray(MiB / 2 + MiB))).toBe(true);
  });
});
