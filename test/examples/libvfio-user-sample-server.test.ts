/**
 * examples/libvfio-user-sample-server.ts (the twin of libvfio-user's
 * samples/server.c) driven by our client through the sequence libvfio-user's
 * samples/client follows: VERSION, a bogus region, device and region info,
 * config ids, reset, DMA maps, INTx, dirty logging, the timed interrupt and
 * its DMA round, dirty bitmaps, pre-copy under guest writes, stop-copy, and
 * resume into a SECOND twin process that delivers the interrupt and DMA
 * round itself. The real C client runs against the twin in
 * `npm run interop:libvfio-user` (scripts/libvfio-user-client.ts); CI has no
 * copy of it, this test keeps the same facts checked on every run.
 *
 * Two deliberate differences from the C client: the interrupt is set 5 s
 * ahead, not 10, and the destination gets its DMA maps and INTx eventfd
 * in RESUMING (a VMM's order) rather than after RUNNING, so nothing depends
 * on migration finishing before the interrupt is due.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Errno, MigrationState, PciIrq, PciRegion, RegionCap, serve, type DeviceServer } from 'vfio-user-ts';
import { VfioUserClient, VfioUserClientError, type GuestMemory } from 'vfio-user-ts/client';
import {
  createSampleDevice,
  SAMPLE_BAR1_SIZE,
  SAMPLE_STOP_COPY_BYTES,
  SampleIds,
} from '../../examples/libvfio-user-sample-server.js';
import { native } from '../../native/index.js';
import { ROOT } from '../cli/daemon-process.js';
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';
import { tempDir, type TempDir } from '../helpers/temp.js';

noFdLeakEachTest();

const TWIN = join(ROOT, 'examples', 'libvfio-user-sample-server.ts');
const TSX_LOADER = pathToFileURL(join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;
const PAGE = 4096;
/** What samples/client offers in VERSION. */
const SAMPLE_CLIENT_CAPS = { maxMsgFds: 32, maxDataXferSize: 1024 };

interface Twin {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** Start the twin as samples/client starts its destination: `server -v PATH`. */
async function startTwin(socketPath: string): Promise<Twin> {
  const child = spawn(process.execPath, ['--import', TSX_LOADER, TWIN, '-v', socketPath], {
    cwd: ROOT,
    env: { ...process.env, TSX_TSCONFIG_PATH: join(ROOT, 'tsconfig.json') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (text += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (text += s));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  const state = { gone: false };
  void exited.then(() => (state.gone = true));
  while (!existsSync(socketPath)) {
    if (state.gone) throw new Error(`the twin exited before listening:\n${text}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return { child, output: () => text, exited };
}

/** Resolves when `done()` holds (checked as the client serves DMA messages). */
async function until(done: () => boolean, what: string, twin: Twin): Promise<void> {
  for (let i = 0; i < 2000 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!done()) throw new Error(`${what} never happened; twin output:\n${twin.output()}`);
}

/** The round the twin does at the interrupt: 'A'..'D' x 1 KiB at the start of a range. */
function expectRound(mem: GuestMemory, page: number): void {
  const bytes = mem.read(page * PAGE, PAGE);
  for (let i = 0; i < 4; i++) expect(bytes.subarray(i * 1024, (i + 1) * 1024).every((b) => b === 0x41 + i)).toBe(true);
}

function timeBytes(t: bigint): Uint8Array {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(t);
  return b;
}

const nowSeconds = (): bigint => BigInt(Math.floor(Date.now() / 1000));

/** A BAR0 read answers now - T, T the time last written. */
async function expectBar0Delta(c: VfioUserClient, t: bigint): Promise<void> {
  const before = nowSeconds();
  const delta = Buffer.from(await c.regionRead(PciRegion.BAR0, 0, 8)).readBigInt64LE();
  const after = nowSeconds();
  expect(delta >= before - t && delta <= after - t).toBe(true);
}

describe("libvfio-user's samples/server twin", () => {
  let dir: TempDir | undefined;
  const twins: Twin[] = [];
  const clients: VfioUserClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const t of twins.splice(0)) {
      t.child.kill('SIGKILL');
      await t.exited;
    }
    dir?.remove();
  });

  it('takes samples/client sequence, migration into a second twin process included', async () => {
    dir = tempDir('sample-');
    const sourcePath = dir.file('s.sock');
    const destPath = `${sourcePath}_migrated`;
    const source = await startTwin(sourcePath);
    twins.push(source);
    const c = await VfioUserClient.connect(sourcePath, { capabilities: SAMPLE_CLIENT_CAPS });
    clients.push(c);
    const serverFds = c.server!.capabilities.maxMsgFds;
    const chunk = Math.min(c.serverMaxDataXferSize, SAMPLE_CLIENT_CAPS.maxDataXferSize);
    expect(chunk).toBe(1024);
    expect(c.server!.capabilities.migration).toBeDefined();

    // A bogus region: EINVAL.
    await expect(c.regionRead(0xdeadbeef, 0, 4)).rejects.toMatchObject({ errno: Errno.EINVAL });

    const info = await c.getDeviceInfo();
    expect(info.numRegions).toBe(9);
    expect(info.numIrqs).toBe(5);
    const bar0 = await c.getRegionInfo(PciRegion.BAR0);
    expect(Number(bar0.size)).toBeGreaterThanOrEqual(8);
    const bar1 = await c.getRegionInfo(PciRegion.BAR1);
    expect(bar1.fd).toBeDefined();
    native.closeFd(bar1.fd!);
    const sparse = bar1.caps.find((cap) => cap.id === RegionCap.SPARSE_MMAP);
    expect(sparse && 'areas' in sparse ? sparse.areas.map((a) => [Number(a.offset), Number(a.size)]) : []).toEqual([
      [0, 0x1000],
      [0x2000, 0x1000],
    ]);

    expect(await c.cfg16(0x00)).toBe(SampleIds.vendor);
    expect(await c.cfg16(0x02)).toBe(SampleIds.device);
    expect(await c.cfg16(0x2c)).toBe(SampleIds.subsystemVendor);
    expect(await c.cfg16(0x2e)).toBe(SampleIds.subsystem);

    await c.reset();

    // One page per range, twice the server's max_msg_fds of them, each with the memory's fd.
    const ranges = serverFds * 2;
    const mem = c.createGuestMemory(ranges * PAGE);
    for (let i = 0; i < ranges; i++)
      await c.dmaMap({ addr: BigInt(i * PAGE), size: BigInt(PAGE), backing: mem, offset: i * PAGE });

    expect((await c.getIrqInfo(PciIrq.INTX)).count).toBe(1);
    await c.enableIrqs(PciIrq.INTX, 1);
    await c.startDirtyLogging({ pageSize: BigInt(PAGE) });

    // The interrupt in a second or two: INTx, then the DMA round (direct on range 1, by messages on range 0).
    await c.regionWrite(PciRegion.BAR0, 0, timeBytes(nowSeconds() + 2n));
    await c.regionRead(PciRegion.BAR0, 0, 8);
    await c.waitForIrq(PciIrq.INTX, 0, 10_000);
    await until(() => c.served.dmaWrite === 4 && c.served.dmaRead === 4, 'the source DMA round', source);
    expectRound(mem, 1);
    expectRound(mem, 0);

    // Range 1 was written directly: the server's bitmap says so. Range 0 went by our
    // DMA_WRITE handling (the C client marks it itself); the others are clean.
    const dirty: number[] = [];
    for (let i = 0; i < ranges; i++) {
      const bitmap = await c.dirtyBitmap(BigInt(i * PAGE), BigInt(PAGE));
      if (bitmap.isDirty(0)) dirty.push(i);
    }
    expect(dirty).toContain(1);
    expect(dirty.every((i) => i < 2)).toBe(true);
    await c.stopDirtyLogging();

    // Unmap the first half; the interrupt again, 5 s ahead, to come from the destination (on the
    // source it would find its DMA slots 0 and 1 empty: the sample exits then, and so does the twin).
    for (let i = 0; i < serverFds; i++) await c.dmaUnmap(BigInt(i * PAGE), BigInt(PAGE));
    const due = nowSeconds() + 5n;
    await c.regionWrite(PciRegion.BAR0, 0, timeBytes(due));

    // Pre-copy while a "guest" keeps writing BAR1: 12 reads of 1 KiB.
    await c.setMigrationState(MigrationState.PRE_COPY);
    const guest = { done: false };
    let last = new Uint8Array(0);
    const guestWrites = (async () => {
      do {
        const buf = randomBytes(SAMPLE_BAR1_SIZE);
        await c.regionWrite(PciRegion.BAR1, 0, buf);
        last = buf;
      } while (!guest.done);
    })();
    const preCopy: Uint8Array[] = [];
    for (let i = 0; i < 12; i++) preCopy.push(await c.readMigrationData(chunk));
    guest.done = true;
    await guestWrites;
    expect(preCopy.map((d) => d.byteLength)).toEqual(new Array<number>(12).fill(1024));

    // Stop-copy: 12 x 1 KiB and 8 bytes (BAR1, then BAR0), then the end.
    await c.setMigrationState(MigrationState.STOP_COPY);
    const stopCopy: Uint8Array[] = [];
    for (let i = 0; i < 13; i++) stopCopy.push(await c.readMigrationData(chunk));
    expect(stopCopy.map((d) => d.byteLength)).toEqual([...new Array<number>(12).fill(1024), 8]);
    expect((await c.readMigrationData(chunk)).byteLength).toBe(0);
    const data = Buffer.concat(stopCopy);
    expect(data.byteLength).toBe(SAMPLE_STOP_COPY_BYTES);
    expect(data.subarray(0, SAMPLE_BAR1_SIZE).equals(last)).toBe(true);
    expect(data.readBigInt64LE(SAMPLE_BAR1_SIZE)).toBe(due);
    await c.setMigrationState(MigrationState.STOP);

    // The destination: a second twin process, as `server -v PATH_migrated`.
    const dest = await startTwin(destPath);
    twins.push(dest);
    const d = await VfioUserClient.connect(destPath, { capabilities: SAMPLE_CLIENT_CAPS });
    clients.push(d);
    await d.setMigrationState(MigrationState.RESUMING);
    // Memory and the INTx eventfd now (RESUMING serves every command; STOP would refuse them).
    const second = mem;
    second.bytes.fill(0, serverFds * PAGE);
    for (let i = serverFds; i < ranges; i++)
      await d.dmaMap({ addr: BigInt(i * PAGE), size: BigInt(PAGE), backing: second, offset: i * PAGE });
    await d.enableIrqs(PciIrq.INTX, 1);
    for (const piece of stopCopy) await d.writeMigrationData(piece);
    await d.setMigrationState(MigrationState.STOP);
    // samples/client's crc check is over these bytes: BAR1 as the guest last wrote it.
    expect(Buffer.from(await d.regionRead(PciRegion.BAR1, 0, SAMPLE_BAR1_SIZE)).equals(last)).toBe(true);
    await d.setMigrationState(MigrationState.RUNNING);

    await d.waitForIrq(PciIrq.INTX, 0, 15_000);
    await until(() => d.served.dmaWrite === 4 && d.served.dmaRead === 4, 'the destination DMA round', dest);
    // Its DMA slots 0 and 1 are the first two ranges it was given.
    expectRound(second, serverFds + 1);
    expectRound(second, serverFds);

    await d.dmaUnmapAll();
    d.close();
    c.close();
    // One client each, then they exit 0, as the sample does.
    expect(await dest.exited).toBe(0);
    expect(await source.exited).toBe(0);
  }, 60_000);

  describe('in-process: what it refuses', () => {
    let server: DeviceServer | undefined;
    afterEach(async () => {
      await server?.close();
      server = undefined;
    });

    async function connected(): Promise<{ c: VfioUserClient; close: () => void }> {
      dir = tempDir('sample-');
      const fatal: Error[] = [];
      const { dev } = createSampleDevice({ onFatal: (err) => fatal.push(err) });
      server = await serve(dev, { socketPath: dir.file('s.sock') });
      const c = await VfioUserClient.connect(dir.file('s.sock'), { capabilities: SAMPLE_CLIENT_CAPS });
      clients.push(c);
      return {
        c,
        close: () => {
          expect(fatal).toEqual([]);
          dev.close();
        },
      };
    }

    it('BAR0 is one time_t at 0, BAR1 ends at 0x3000, a past time is EINVAL', async () => {
      const { c, close } = await connected();
      const einval = { errno: Errno.EINVAL };
      await expect(c.regionRead(PciRegion.BAR0, 0, 4)).rejects.toMatchObject(einval);
      await expect(c.regionRead(PciRegion.BAR0, 8, 8)).rejects.toMatchObject(einval);
      await expect(c.regionWrite(PciRegion.BAR0, 0, timeBytes(nowSeconds() - 5n))).rejects.toMatchObject(einval);
      await expect(c.regionRead(PciRegion.BAR1, SAMPLE_BAR1_SIZE, 4)).rejects.toMatchObject(einval);
      await expect(c.regionRead(PciRegion.BAR1, SAMPLE_BAR1_SIZE - 4, 8)).rejects.toMatchObject(einval);
      // The trapped middle page and the mapped ones are the same memory.
      const bytes = randomBytes(SAMPLE_BAR1_SIZE);
      await c.regionWrite(PciRegion.BAR1, 0, bytes);
      expect(
        Buffer.from(await c.regionRead(PciRegion.BAR1, 0x1000, 0x1000)).equals(bytes.subarray(0x1000, 0x2000)),
      ).toBe(true);
      // Outside RUNNING a BAR0 write only stores the time (the sample arms its timer in RUNNING only).
      await c.setMigrationState(MigrationState.PRE_COPY);
      await c.regionWrite(PciRegion.BAR0, 0, timeBytes(123n));
      await expectBar0Delta(c, 123n);
      close();
    });

    it('a RESUMING that ends short is refused and changes nothing; more than 0x3008 bytes is EINVAL', async () => {
      const { c, close } = await connected();
      const before = randomBytes(SAMPLE_BAR1_SIZE);
      await c.regionWrite(PciRegion.BAR1, 0, before);
      await c.setMigrationState(MigrationState.RESUMING);
      await c.writeMigrationData(new Uint8Array(1024).fill(7));
      await expect(c.setMigrationState(MigrationState.STOP)).rejects.toBeInstanceOf(VfioUserClientError);
      expect(await c.migrationState()).toBe(MigrationState.RESUMING);
      expect(Buffer.from(await c.regionRead(PciRegion.BAR1, 0, SAMPLE_BAR1_SIZE)).equals(before)).toBe(true);
      // The rest of the 0x3008 bytes; one byte more is refused.
      for (let i = 1; i < 12; i++) await c.writeMigrationData(new Uint8Array(1024));
      await expect(c.writeMigrationData(new Uint8Array(9))).rejects.toMatchObject({ errno: Errno.EINVAL });
      await c.writeMigrationData(timeBytes(42n));
      await c.setMigrationState(MigrationState.STOP);
      const after = await c.regionRead(PciRegion.BAR1, 0, SAMPLE_BAR1_SIZE);
      expect(after.subarray(0, 1024).every((b) => b === 7)).toBe(true);
      expect(after.subarray(1024).every((b) => b === 0)).toBe(true);
      await expectBar0Delta(c, 42n);
      close();
    });
  });
});
