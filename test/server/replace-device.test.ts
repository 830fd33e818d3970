/**
 * DeviceServer.replaceDevice, driven by a real client on a real socket: the
 * device behind a live connection is replaced by a new generation that
 * takes its state, the client's DMA mappings, eventfds and mmapped BAR
 * memory; requests sent during the swap are answered once, by the new
 * device; every failure leaves the old device serving, with a
 * ReplaceDeviceError naming the stage; no fd is left behind.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient, type GuestMemory } from '../../client/index.js';
import { native } from '../../native/index.js';
import { PciIrq } from '../../protocol/constants.js';
import { MigrationState } from '../../protocol/features.js';
import { PciDevice } from '../../server/pci/index.js';
import { ReplaceDeviceError } from '../../server/replace-device.js';
import { serve, type DeviceServer } from '../../server/server.js';
import { defineDeviceState, olderState } from '../../server/state/device-state.js';
import { Field } from '../../server/state/fields.js';
import { silentLogger } from '../../server/log.js';
import { fdBaseline, type FdBaseline } from '../helpers/fds.js';
import { tempSocketPath } from '../helpers/temp.js';

const GPA = 0x10_0000n;
const Reg = { GEN: 0x00, SCRATCH: 0x04, COPY: 0x08, COPIES: 0x0c, SLOW: 0x10 } as const;
/** A read of SLOW waits for this (a device still busy with a request), after calling slowReadStarted. */
let slowRead: Promise<void> = Promise.resolve();
let slowReadStarted: () => void = () => undefined;
const scratchOnly = Field.struct({ scratch: Field.u32() });
const withCopies = Field.struct({ scratch: Field.u32(), copies: Field.u32() });

interface Generation {
  /** What GEN reads. */
  gen: number;
  kind?: string;
  /** Version 2 (scratch and copies) reads version 1 (scratch) too. */
  version?: 1 | 2;
  bar2Size?: number;
  resume?: () => void;
}

/**
 * A device of generation `gen`: GEN reads it; SCRATCH is state; a write to
 * COPY makes the device read the u32 at guest address GPA, write it + gen at
 * GPA + 4 (DMA) and signal MSI-X vector 0; COPIES counts those (state in
 * version 2). BAR2 is plain shared memory the client mmaps.
 */
function device({ gen, kind = 'replace-test', version = 2, bar2Size = 0x1000, resume }: Generation): PciDevice {
  const regs = { scratch: 0, copies: 0 };
  let inFlight: Promise<void> = Promise.resolve();
  const dev: PciDevice = new PciDevice({
    name: 'replaceable',
    log: silentLogger,
    id: { vendor: 0x1b36, device: 0x0005, classCode: 0xff0000 },
    bars: [
      {
        index: 0,
        size: 0x1000,
        read: (offset) =>
          offset === Reg.SLOW
            ? (slowReadStarted(), slowRead.then(() => gen))
            : offset === Reg.GEN
              ? gen
              : offset === Reg.SCRATCH
                ? regs.scratch
                : offset === Reg.COPIES
                  ? regs.copies
                  : 0,
        write: (offset, _size, value) => {
          if (offset === Reg.SCRATCH) regs.scratch = value;
          if (offset === Reg.COPY) {
            inFlight = (async () => {
              const bytes = await dev.dma.read(GPA, 4);
              const v = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
              const out = new Uint8Array(4);
              new DataView(out.buffer).setUint32(0, (v + gen) >>> 0, true);
              await dev.dma.write(GPA + 4n, out);
              regs.copies++;
              dev.irq.trigger(0);
            })();
          }
        },
      },
      { index: 2, size: bar2Size, memory: true },
    ],
    interrupts: { msix: { vectors: 2, bar: 4 } },
    quiesce: () => inFlight,
    ...(resume ? { resume } : {}),
    state:
      version === 1
        ? defineDeviceState({
            kind,
            version: 1,
            schema: scratchOnly,
            save: () => ({ scratch: regs.scratch }),
            load: (s) => {
              regs.scratch = s.scratch;
            },
          })
        : defineDeviceState({
            kind,
            version: 2,
            schema: withCopies,
            save: () => ({ ...regs }),
            load: (s) => {
              Object.assign(regs, s);
            },
            older: [olderState(1, scratchOnly, (old) => ({ scratch: old.scratch, copies: 0 }))],
          }),
  });
  return dev;
}

const u32 = (b: Uint8Array): number => new DataView(b.buffer, b.byteOffset).getUint32(0, true);

let fds: FdBaseline;
let sock: { path: string; remove(): void };
let server: DeviceServer;
let client: VfioUserClient;
let memory: GuestMemory;
let bar2: ReturnType<typeof native.mmapFd>;

async function read(offset: number): Promise<number> {
  return u32(await client.regionRead(0, offset, 4));
}

/** Ask the device to copy through DMA and wait for its interrupt: returns what it wrote. */
async function copyByDma(value: number): Promise<number> {
  new DataView(memory.bytes.buffer).setUint32(0, value, true);
  const irq = client.waitForIrq(PciIrq.MSIX, 0);
  await client.regionWrite(0, Reg.COPY, Uint8Array.of(1, 0, 0, 0));
  await irq;
  return new DataView(memory.bytes.buffer).getUint32(4, true);
}

beforeEach(async () => {
  fds = fdBaseline();
  sock = tempSocketPath('replace');
  server = await serve(device({ gen: 1, version: 1 }), { socketPath: sock.path, log: silentLogger });
  client = await VfioUserClient.connect(sock.path);
  await client.enableDevice();
  memory = client.createGuestMemory(0x1000);
  await client.dmaMap({ addr: GPA, backing: memory });
  await client.enableIrqs(PciIrq.MSIX, 2);
  const info = await client.getRegionInfo(2);
  bar2 = native.mmapFd(info.fd!, 0, 0x1000, native.PROT_READ | native.PROT_WRITE);
  native.closeFd(info.fd!);
  await client.regionWrite(0, Reg.SCRATCH, Uint8Array.of(0x78, 0x56, 0x34, 0x12));
});

afterEach(async () => {
  bar2.unmap();
  client.close();
  await server.close();
  if (server.endpoint instanceof PciDevice) server.endpoint.close();
  memory.close();
  sock.remove();
  await fds.settle();
});

describe('replaceDevice under a live client', () => {
  it('carries the state and the client keeps DMA, interrupts and its BAR mapping', async () => {
    expect(await copyByDma(10)).toBe(11);
    const shared = new Uint8Array(bar2.buffers[0]!);
    shared[0x10] = 0xa5; // the client writes the BAR it mmapped
    const open = fdBaseline();
    const result = await server.replaceDevice(() => device({ gen: 2 }));
    const next = result.device;
    expect(server.endpoint).toBe(next);
    expect(result.connected).toBe(true);
    expect(result.previous).not.toBe(next);
    expect(await read(Reg.GEN)).toBe(2);
    expect(await read(Reg.SCRATCH)).toBe(0x12345678); // state, upgraded from version 1
    expect(next.busMasterEnabled).toBe(true); // not reset
    expect(await copyByDma(10)).toBe(12); // DMA through the client's mapping, then MSI-X through its eventfd
    expect(next.barMemory(2)[0x10]).toBe(0xa5); // the same memory the client mmapped
    next.barMemory(2)[0x20] = 0x5a;
    expect(shared[0x20]).toBe(0x5a);
    await open.settle(); // the new device's own memfd was closed with the old device
  });

  it('answers requests sent during the swap once, by the new device', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let constructing!: () => void;
    const started = new Promise<void>((r) => (constructing = r));
    const swap = server.replaceDevice(async () => {
      constructing();
      await gate; // the old device is quiesced and saved: the client's requests wait now
      return device({ gen: 3 });
    });
    await started;
    const reads = [read(Reg.GEN), read(Reg.SCRATCH), read(Reg.GEN)];
    let answered = 0;
    for (const r of reads) void r.then(() => answered++);
    await new Promise((r) => setTimeout(r, 50));
    expect(answered).toBe(0);
    release();
    await swap;
    expect(await Promise.all(reads)).toEqual([3, 0x12345678, 3]);
    expect(client.strays).toEqual([]); // no second reply to any of them
  });

  it('is refused (busy) while the client logs dirty pages or migrates the device', async () => {
    await client.startDirtyLogging();
    await expect(server.replaceDevice(() => device({ gen: 6 }))).rejects.toMatchObject({
      stage: 'busy',
      message: /logging dirty pages/,
    });
    await client.stopDirtyLogging();
    await client.setMigrationState(MigrationState.STOP);
    await expect(server.replaceDevice(() => device({ gen: 6 }))).rejects.toMatchObject({
      stage: 'busy',
      message: /migration is in progress \(STOP\)/,
    });
    await client.setMigrationState(MigrationState.RUNNING);
    expect(await read(Reg.GEN)).toBe(1);
    await server.replaceDevice(() => device({ gen: 6 }));
    expect(await read(Reg.GEN)).toBe(6);
  });

  it('gives up (busy) when a request does not complete in time, touching nothing', async () => {
    let release!: () => void;
    slowRead = new Promise<void>((r) => (release = r));
    const started = new Promise<void>((r) => (slowReadStarted = r));
    const slow = read(Reg.SLOW);
    await started; // the device is handling it
    const err: unknown = await server
      .replaceDevice(() => device({ gen: 8 }), { busyTimeoutMs: 50 })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ stage: 'busy', message: /still running after 50 ms/ });
    release();
    slowRead = Promise.resolve();
    expect(await slow).toBe(1); // answered by the device it was sent to
    expect(await read(Reg.GEN)).toBe(1);
    await server.replaceDevice(() => device({ gen: 8 }));
    expect(await read(Reg.GEN)).toBe(8);
  });

  it('without a client: the next client gets the new device', async () => {
    client.close();
    await new Promise<void>((r) => server.once('disconnect', () => r()));
    const result = await server.replaceDevice(device({ gen: 4 }));
    expect(result.connected).toBe(false);
    client = await VfioUserClient.connect(sock.path);
    expect(await read(Reg.GEN)).toBe(4);
  });

  it('a client that connects during a swap with nobody attached waits and gets the new device', async () => {
    client.close();
    await new Promise<void>((r) => server.once('disconnect', () => r()));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let constructing!: () => void;
    const started = new Promise<void>((r) => (constructing = r));
    const swap = server.replaceDevice(async () => {
      constructing();
      await gate;
      return device({ gen: 7 });
    });
    await started;
    const connecting = VfioUserClient.connect(sock.path);
    await new Promise((r) => setTimeout(r, 50));
    release();
    await swap;
    client = await connecting;
    expect(await read(Reg.GEN)).toBe(7);
    expect(server.connection?.endpoint).toBe(server.endpoint);
  });
});

describe('a replacement that fails leaves the old device serving', () => {
  const cases: [string, () => PciDevice | Promise<PciDevice>, RegExp][] = [
    [
      'construct',
      () => {
        throw new Error('typo in the module');
      },
      /typo in the module/,
    ],
    ['state', () => device({ gen: 5, kind: 'another-device' }), /another-device/],
    ['state', () => device({ gen: 5, bar2Size: 0x2000 }), /another PCI layout/],
    [
      'resume',
      () =>
        device({
          gen: 5,
          resume: () => {
            throw new Error('cannot start');
          },
        }),
      /cannot start/,
    ],
  ];
  for (const [stage, make, why] of cases) {
    it(`${stage}: ${why.source}`, async () => {
      const open = fdBaseline();
      const old = server.endpoint;
      const err: unknown = await server.replaceDevice(make).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ReplaceDeviceError);
      expect((err as ReplaceDeviceError).stage).toBe(stage);
      expect((err as Error).message).toMatch(why);
      expect(server.endpoint).toBe(old);
      expect(old instanceof PciDevice && old.quiesced).toBe(false);
      expect(await read(Reg.GEN)).toBe(1);
      expect(await read(Reg.SCRATCH)).toBe(0x12345678);
      expect(await copyByDma(20)).toBe(21);
      await open.settle();
    });
  }
});
