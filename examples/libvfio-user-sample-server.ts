/**
 * A TypeScript twin of libvfio-user's samples/server.c, written from its
 * behaviour, so that libvfio-user's unmodified samples/client runs against
 * us, migration included (scripts/libvfio-user-client.ts runs it;
 * docs/writing-a-device.md, "A worked migration: the libvfio-user sample
 * twin", walks through it).
 *
 *   npx tsx examples/libvfio-user-sample-server.ts [-v] /tmp/sample.sock
 *
 * Like the sample it serves one client and exits when that client is gone.
 *
 * The device:
 * - ids 0xdead:0xbeef, subsystem 0xcafe:0xbabe; INTx (plus ERR and REQ, as
 *   libvfio-user always offers them);
 * - BAR0, trapped: one time_t (8 bytes at offset 0, nothing else). A write
 *   of T (seconds since the epoch) while the migration state is RUNNING
 *   schedules "the interrupt" for time T; a read returns now - T;
 * - BAR1: 0x3000 bytes of plain memory whose first and third pages the client
 *   may mmap (the middle one is trapped, same bytes). The sample asks for
 *   0x3000; a BAR must be a power of two, so ours is 0x4000 and its last page
 *   answers EINVAL, as the sample does past 0x3000;
 * - when the interrupt is due: INTx fires, then the device writes 4 KiB
 *   ('A' x1024, 'B' x1024, ...) at the start of the second DMA range the
 *   client mapped, directly in the shared memory (its pages marked dirty),
 *   reads it back in 2 KiB pieces and compares; then the same at the start
 *   of the first range by DMA_WRITE/DMA_READ messages (the client's
 *   max_data_xfer_size cuts them: 4 writes and 4 reads of 1 KiB with the
 *   sample client). A mismatch or a failure is fatal, as in the sample;
 * - migration: its own wire format, byte for byte (a MigrationDataStream):
 *   pre-copy data is BAR1's 0x3000 bytes, stop-copy data is BAR1's 0x3000
 *   bytes then BAR0's 8 (little-endian time_t). The destination takes the
 *   0x3000 + 8 bytes in RESUMING and, once running, schedules the interrupt
 *   for the time in the migrated BAR0.
 *
 * Deliberate differences from the C sample: a BAR1 read returns the bytes at
 * the offset asked (the sample's copies from offset 0; its client only reads
 * at 0); the interrupt is due at the wall-clock second T, where the sample's
 * whole-second itimer is disarmed when the second turns between the client's
 * time() and the write (a one-in-many hang of the sample pair); a RESUMING
 * that ends with too few bytes is refused (EINVAL) where the sample asserts.
 */
import { pathToFileURL } from 'node:url';
import {
  defaultLogger,
  Errno,
  MigrationState,
  PciDevice,
  serve,
  VfioUserError,
  type DmaRegion,
  type Logger,
  type MigrationDataStream,
  type SavePhase,
} from 'vfio-user-ts';

/** The ids samples/client checks. */
export const SampleIds = { vendor: 0xdead, device: 0xbeef, subsystemVendor: 0xcafe, subsystem: 0xbabe } as const;
/** BAR1 as the sample defines it (what is read, written and migrated). */
export const SAMPLE_BAR1_SIZE = 0x3000;
/** BAR1 as we declare it: the next power of two. */
const BAR1_REGION_SIZE = 0x4000;
/** BAR0 holds one time_t; memory BARs are at least 16 bytes. */
const TIME_BYTES = 8;
const BAR0_REGION_SIZE = 16;
/** Bytes of stop-copy data (and of a whole RESUMING): BAR1, then BAR0. */
export const SAMPLE_STOP_COPY_BYTES = SAMPLE_BAR1_SIZE + TIME_BYTES;
/** The sample's table of DMA ranges: the device works on slots 0 and 1. */
const DMA_SLOTS = 96;
const DMA_CHUNK = 1024;
const DMA_CHUNKS = 4;

export interface SampleDeviceOptions {
  log?: Logger;
  /** The sample exits on a failed DMA check; called with the error (default: log it and exit(1)). */
  onFatal?: (err: Error) => void;
}

/** What the device did, for tests and the interop script. */
export interface SampleDeviceCounters {
  /** Interrupts fired (each followed by the DMA round). */
  interrupts: number;
  /** DMA rounds that completed and compared equal. */
  dmaRounds: number;
}

export interface SampleDevice {
  readonly dev: PciDevice;
  readonly counters: SampleDeviceCounters;
}

const nowSeconds = (): bigint => BigInt(Math.floor(Date.now() / 1000));

export function createSampleDevice(options: SampleDeviceOptions = {}): SampleDevice {
  const counters: SampleDeviceCounters = { interrupts: 0, dmaRounds: 0 };
  /** BAR0: the time_t last written (or migrated in). */
  let bar0 = 0n;
  /** When the interrupt is due (seconds), while one is scheduled; kept across quiesce so resume re-arms it. */
  let due: bigint | undefined;
  let timer: NodeJS.Timeout | undefined;
  /** The interrupt's DMA round in progress: quiesce waits for it (the sample does it in its main loop). */
  let round: Promise<void> = Promise.resolve();
  const slots: ({ addr: bigint; size: bigint } | undefined)[] = new Array<undefined>(DMA_SLOTS).fill(undefined);

  const fatal =
    options.onFatal ??
    ((err: Error) => {
      dev.log.fatal({ err }, 'sample device failed');
      process.exit(1);
    });

  function schedule(t: bigint): void {
    if (timer) clearTimeout(timer);
    due = t;
    timer = setTimeout(fire, Math.max(0, Number(t) * 1000 - Date.now()));
    dev.log.debug({ inSeconds: Number(t - nowSeconds()) }, 'interrupt scheduled');
  }

  function fire(): void {
    timer = undefined;
    due = undefined;
    round = (async () => {
      dev.irq.trigger(0);
      counters.interrupts++;
      console.log('doing dma io');
      await dmaRound(1, 'direct');
      await dmaRound(0, 'messages');
      counters.dmaRounds++;
    })().catch((err: unknown) => fatal(err instanceof Error ? err : new Error(String(err))));
  }

  /** Write 4 KiB at the start of a DMA slot's range, read it back at twice the chunk size, compare. */
  async function dmaRound(slot: number, how: 'direct' | 'messages'): Promise<void> {
    const range = slots[slot];
    if (!range) throw new Error(`no DMA range in slot ${slot}`);
    const written = new Uint8Array(DMA_CHUNK * DMA_CHUNKS);
    for (let i = 0; i < DMA_CHUNKS; i++) {
      const piece = written.subarray(i * DMA_CHUNK, (i + 1) * DMA_CHUNK).fill(0x41 + i);
      const addr = range.addr + BigInt(i * DMA_CHUNK);
      dev.log.debug({ addr: `0x${addr.toString(16)}`, size: DMA_CHUNK }, `${how} DMA write`);
      if (how === 'messages') await dev.dma.write(addr, piece, { via: 'messages' });
      else {
        // The memory is the client's, written behind its back: a readwrite pin marks
        // the pages dirty for the client's DMA_LOGGING_REPORT (vfu_sgl_get/put's part).
        const pin = dev.dma.pin([{ addr, length: DMA_CHUNK }], 'readwrite');
        if (!pin) throw new Error(`DMA range 0x${addr.toString(16)} cannot be reached directly`);
        try {
          pin.views[0]!.set(piece);
        } finally {
          pin.release();
        }
      }
    }
    const readBack = new Uint8Array(written.length);
    for (let i = 0; i < DMA_CHUNKS; i += 2) {
      const addr = range.addr + BigInt(i * DMA_CHUNK);
      const length = 2 * DMA_CHUNK;
      dev.log.debug({ addr: `0x${addr.toString(16)}`, size: length }, `${how} DMA read`);
      if (how === 'messages') readBack.set(await dev.dma.read(addr, length, { via: 'messages' }), i * DMA_CHUNK);
      else {
        const pin = dev.dma.pin([{ addr, length }], 'read');
        if (!pin) throw new Error(`DMA range 0x${addr.toString(16)} cannot be reached directly`);
        try {
          readBack.set(pin.views[0]!, i * DMA_CHUNK);
        } finally {
          pin.release();
        }
      }
    }
    if (!Buffer.from(written).equals(readBack)) throw new Error(`${how} DMA: what was read back differs`);
    dev.log.debug(`${how} DMA success`);
  }

  function bar1(): Uint8Array {
    return dev.barMemory(1);
  }

  /** BAR1's trapped page (and our extra page, which the sample does not have: EINVAL). */
  function bar1Bytes(offset: number, size: number): Uint8Array {
    if (offset + size > SAMPLE_BAR1_SIZE)
      throw new VfioUserError(Errno.EINVAL, `bad BAR1 access 0x${offset.toString(16)}+${size}`);
    return bar1().subarray(offset, offset + size);
  }

  const stream = new SampleMigrationStream(
    () => bar1(),
    () => bar0,
    (bytes) => {
      bar1().set(bytes.subarray(0, SAMPLE_BAR1_SIZE));
      bar0 = Buffer.from(bytes.buffer, bytes.byteOffset + SAMPLE_BAR1_SIZE, TIME_BYTES).readBigInt64LE();
      // The sample arms its timer on RUNNING from the migrated BAR0: resume() does it.
      due = bar0;
    },
  );

  const bad0 = (offset: number, size: number): never => {
    throw new VfioUserError(Errno.EINVAL, `bad BAR0 access 0x${offset.toString(16)}+${size}`);
  };

  const dev: PciDevice = new PciDevice({
    name: 'libvfio-user-sample',
    id: { ...SampleIds, classCode: 0 },
    bars: [
      {
        index: 0,
        size: BAR0_REGION_SIZE,
        read: (offset, size) => bad0(offset, size),
        write: (offset, size) => bad0(offset, size),
        read64: (offset) => (offset === 0 ? BigInt.asIntN(64, nowSeconds() - bar0) : bad0(offset, TIME_BYTES)),
        write64: (offset, value) => {
          if (offset !== 0) bad0(offset, TIME_BYTES);
          const t = BigInt.asIntN(64, value);
          if (dev.migration?.state === MigrationState.RUNNING) {
            // setitimer() refuses a time in the past: so does the sample, so do we.
            if (t < nowSeconds()) throw new VfioUserError(Errno.EINVAL, `BAR0: ${t} is in the past`);
            schedule(t);
          }
          bar0 = t;
        },
      },
      {
        index: 1,
        size: BAR1_REGION_SIZE,
        memory: [
          { offset: 0, size: 0x1000 },
          { offset: 0x2000, size: 0x1000 },
        ],
        read: (offset, size) => {
          const b = bar1Bytes(offset, size);
          return size === 1 ? b[0]! : size === 2 ? b[0]! | (b[1]! << 8) : Buffer.from(b).readUInt32LE();
        },
        write: (offset, size, value) => {
          const b = bar1Bytes(offset, size);
          for (let i = 0; i < size; i++) b[i] = (value >>> (8 * i)) & 0xff;
        },
      },
    ],
    interrupts: { intx: true, err: true, req: true },
    migrationStream: stream,
    // Before a migration stops the device or a reset: no timer, the DMA round finished.
    quiesce: async () => {
      if (timer) clearTimeout(timer);
      timer = undefined;
      await round;
    },
    // A DEVICE_RESET keeps the interrupt scheduled (the sample's timer survives it); a
    // client that is gone has nobody to interrupt (the sample exits then).
    onReset: (reason) => {
      if (reason === 'lost-connection' || reason === 'shutdown') due = undefined;
    },
    resume: () => {
      if (due !== undefined) schedule(due);
      openBusMasterGate();
    },
    ...(options.log ? { log: options.log } : {}),
  });

  // libvfio-user does not gate DMA on the Command register's bus-master bit and its
  // sample client never sets it: the twin opens the gate itself, at start and after
  // every reset (resume runs then). A device a guest drives should leave it to the guest.
  function openBusMasterGate(): void {
    dev.dma.setBusMaster(true);
  }
  openBusMasterGate();

  // dma_register / dma_unregister: the first free slot; an unmap frees the slot of that exact range.
  dev.dma.onMap((region: DmaRegion) => {
    const free = slots.indexOf(undefined);
    if (free < 0) return fatal(new Error('failed to add DMA region, slots full'));
    slots[free] = { addr: region.addr, size: region.size };
  });
  dev.dma.onUnmap((region: DmaRegion) => {
    for (let i = 0; i < slots.length; i++)
      if (slots[i]?.addr === region.addr && slots[i]?.size === region.size) slots[i] = undefined;
  });

  return { dev, counters };
}

// #region migration-stream
/**
 * The sample's migration data: BAR1 (0x3000 bytes) in pre-copy; BAR1 then
 * BAR0 (0x3000 + 8) in stop-copy; the same 0x3000 + 8 written in RESUMING.
 * Each read continues where the last stopped and returns nothing at the end.
 */
class SampleMigrationStream implements MigrationDataStream {
  readonly maxLoadBytes = SAMPLE_STOP_COPY_BYTES;
  #total = 0;
  #done = 0;
  /** RESUMING: the bytes so far, applied only when all arrived. */
  readonly #incoming = new Uint8Array(SAMPLE_STOP_COPY_BYTES);
  #received = 0;

  constructor(
    private readonly bar1: () => Uint8Array,
    private readonly bar0: () => bigint,
    private readonly apply: (bytes: Uint8Array) => void,
  ) {}

  beginSave(phase: SavePhase): void {
    this.#total = phase === 'stop-copy' ? SAMPLE_STOP_COPY_BYTES : SAMPLE_BAR1_SIZE;
    this.#done = 0;
  }

  read(max: number): Uint8Array {
    const n = Math.min(max, this.#total - this.#done);
    const out = new Uint8Array(n);
    // Built per read: in pre-copy the device runs and BAR1 changes between reads, as in the sample.
    const image = new Uint8Array(SAMPLE_STOP_COPY_BYTES);
    image.set(this.bar1().subarray(0, SAMPLE_BAR1_SIZE));
    Buffer.from(image.buffer).writeBigInt64LE(BigInt.asIntN(64, this.bar0()), SAMPLE_BAR1_SIZE);
    out.set(image.subarray(this.#done, this.#done + n));
    this.#done += n;
    return out;
  }

  beginLoad(): void {
    this.#received = 0;
  }

  write(data: Uint8Array): void {
    // maxLoadBytes already refused anything beyond SAMPLE_STOP_COPY_BYTES.
    this.#incoming.set(data, this.#received);
    this.#received += data.byteLength;
  }

  endLoad(): void {
    if (this.#received !== SAMPLE_STOP_COPY_BYTES)
      throw new VfioUserError(
        Errno.EINVAL,
        `RESUMING -> STOP: ${this.#received} of ${SAMPLE_STOP_COPY_BYTES} bytes of migration data`,
      );
    this.apply(this.#incoming);
  }
}
// #endregion

/** `[-v] <socketpath>`, as samples/server takes (the client starts its destination with `server -v PATH`). */
function parseArgs(argv: string[]): { verbose: boolean; socketPath: string } {
  let verbose = false;
  const rest: string[] = [];
  for (const a of argv) {
    if (a === '-v') verbose = true;
    else if (a.startsWith('-')) throw new Error(`Usage: libvfio-user-sample-server [-v] <socketpath>`);
    else rest.push(a);
  }
  if (rest.length === 0) throw new Error('missing vfio-user socket path');
  return { verbose, socketPath: rest[0]! };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  let args: { verbose: boolean; socketPath: string };
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error((err as Error).message);
    process.exit(1);
  }
  const log = args.verbose ? defaultLogger().child({}, { level: 'debug' }) : defaultLogger();
  const { dev } = createSampleDevice({ log });
  const server = await serve(dev, { socketPath: args.socketPath, log });
  // One client, then exit (0), like the sample's vfu_run_ctx loop ending in ENOTCONN.
  server.once('disconnect', () => {
    void server.close().then(() => {
      dev.close();
      process.exit(0);
    });
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      void server.close().then(() => process.exit(0));
    });
}
