/**
 * The device author's vocabulary: what `new PciDevice(options)` accepts.
 * Everything is optional except the name, the ids and (usually) the BARs.
 */
import type { Logger } from 'pino';
import type { UnsealedFdPolicy } from '../dma/dma-space.js';
import type { ResetReason } from '../endpoint.js';
import type { MigrationDataStream } from '../migration/device-migration.js';
import type { DeviceState } from '../state/device-state.js';

/** Bytes in one register access handed to a BAR handler. */
export type AccessSize = 1 | 2 | 4;

/** Identity of the function (type-0 header). */
export interface PciId {
  vendor: number;
  device: number;
  /** Default: `vendor`. */
  subsystemVendor?: number;
  /** Default: `device`. */
  subsystem?: number;
  /** 24-bit class code: base class << 16 | subclass << 8 | programming interface. */
  classCode: number;
  /** Default: 0. */
  revision?: number;
}

/**
 * BAR kinds. `mem64` takes two BAR slots (index and index + 1; the upper slot
 * reports size 0). `io` BARs are at most 256 bytes and never mmapped.
 */
export type BarType = 'mem32' | 'mem64' | 'io';

/** Read `size` bytes at `offset` in the BAR (little-endian value). May be async. */
export type BarReadHandler = (offset: number, size: AccessSize) => number | Promise<number>;
/** Write `size` bytes of `value` at `offset` in the BAR. May be async. */
export type BarWriteHandler = (offset: number, size: AccessSize, value: number) => void | Promise<void>;
/** 8-byte register read (only used when the BAR defines it; otherwise 8-byte accesses split in two 4-byte ones, low first). */
export type BarRead64Handler = (offset: number) => bigint | Promise<bigint>;
/** 8-byte register write. */
export type BarWrite64Handler = (offset: number, value: bigint) => void | Promise<void>;

/** A page-aligned window of a BAR that is plain shared memory (mmapped by the client). */
export interface MemoryArea {
  offset: number;
  size: number;
}

export interface BarOptions {
  /** 0-5. */
  index: number;
  /** Power of two (QEMU aborts otherwise). Memory BARs: at least 16 bytes; I/O: 4..256. */
  size: number;
  /** Default 'mem32'. */
  type?: BarType;
  /** Memory BARs only. */
  prefetchable?: boolean;
  /** Trapped register reads (size 1|2|4). Missing: reads return 0. */
  read?: BarReadHandler;
  /** Trapped register writes. Missing: writes are ignored. */
  write?: BarWriteHandler;
  /** Opt into whole 8-byte accesses for naturally aligned 8-byte reads. */
  read64?: BarRead64Handler;
  /** Opt into whole 8-byte accesses for naturally aligned 8-byte writes. */
  write64?: BarWrite64Handler;
  /**
   * Memory-backed parts (memory BARs only): `true` for the whole BAR (minus
   * MSI-X table/PBA pages if they live here), or page-aligned areas. The bytes
   * live in a memfd that the client maps directly; the device sees the same
   * bytes through `dev.barMemory(index)`. Accesses outside the areas still go
   * to `read`/`write`.
   */
  memory?: boolean | MemoryArea[];
}

/** INTx pin. `true` = pin A. */
export type IntxPin = 'A' | 'B' | 'C' | 'D';

export interface MsiOptions {
  /** 1, 2, 4, 8, 16 or 32. */
  vectors: number;
  /** Default true. */
  address64?: boolean;
  /** Per-vector masking (mask and pending registers). Default true. */
  perVectorMask?: boolean;
}

export interface MsixOptions {
  /** 1..2048. */
  vectors: number;
  /**
   * BAR holding the table (and by default the PBA). If no BAR with this index
   * is declared, a dedicated mem32 BAR is created for them (the usual choice).
   * The table and PBA answer their own bytes: in a BAR that has register
   * handlers, accesses there never reach them, so there the constructor
   * refuses a default placement and wants `tableOffset` (and `pbaOffset`)
   * chosen where no register lives.
   */
  bar: number;
  /** Default: 0 in a dedicated BAR; otherwise the upper half of the BAR. Must be 8-byte aligned. */
  tableOffset?: number;
  /** Default: `bar`. */
  pbaBar?: number;
  /** Default: the first 8-byte aligned offset after the table, page-aligned when there is room. */
  pbaOffset?: number;
}

export interface InterruptOptions {
  /** Legacy interrupt pin. Default: none. */
  intx?: boolean | IntxPin;
  /** MSI capability and IRQ index 1. */
  msi?: MsiOptions;
  /** MSI-X capability and IRQ index 2. */
  msix?: MsixOptions;
  /** Error IRQ (index 3, one vector). Default true: QEMU warns without it. */
  err?: boolean;
  /** Request IRQ (index 4, one vector). Default false. */
  req?: boolean;
}

/** PCI Express capability (makes config space 4 KiB). */
export interface ExpressOptions {
  /** Default 'endpoint'. */
  type?: 'endpoint' | 'legacy-endpoint' | 'rc-endpoint';
  /** Advertise Function Level Reset (reset reason 'flr'). Default true. */
  flr?: boolean;
  /** Max payload size supported, bytes (128..4096). Default 256. */
  maxPayload?: number;
}

/** Standard and extended capabilities besides MSI/MSI-X/PCIe (those come from `interrupts` and `express`). */
export type CapabilityOptions =
  /** Power management: D0 and D3hot, No_Soft_Reset (device state survives D3hot -> D0). */
  | { kind: 'pm' }
  /** Vendor-specific capability: `data` follows the 3-byte header (id, next, length). */
  | {
      kind: 'vendor';
      data: Uint8Array;
      /** Per-byte writable masks for `data` (default all read-only). */
      writable?: Uint8Array;
      /** Called after a write touched the data; `bytes` is the capability's current data. */
      onWrite?: (bytes: Uint8Array) => void | Promise<void>;
    }
  /** Extended: Device Serial Number (needs `express`). */
  | { kind: 'dsn'; serial: bigint }
  /** Extended: vendor-specific (needs `express`). `data` follows the 8-byte header. */
  | { kind: 'vendor-ext'; id: number; revision?: number; data: Uint8Array };

/**
 * Why a device is quiesced (PciDeviceOptions.quiesce): 'hold' before its state
 * is saved or loaded (migration stop, `dev.quiesce()`), 'reset' before `onReset`.
 */
export type QuiesceReason = 'hold' | 'reset';

export interface PciDeviceOptions {
  /** Used in logs. */
  name: string;
  id: PciId;
  bars?: BarOptions[];
  interrupts?: InterruptOptions;
  capabilities?: CapabilityOptions[];
  /** Present: a PCI Express endpoint with 4 KiB config space. */
  express?: ExpressOptions | boolean;
  /** Expansion ROM contents (padded to a power of two, at least 2 KiB). */
  rom?: Uint8Array;
  /**
   * Make the device quiet: stop starting new work (no new DMA, no new
   * interrupts, no timers that would do either) and finish or park the work
   * in flight, resolving when none is left. Called before every reset
   * (client DEVICE_RESET, FLR, lost connection), when a migration stops the
   * device (RUNNING -> STOP, PRE_COPY -> STOP_COPY) and before a state is
   * saved or loaded outside a migration (`dev.quiesce()`). Never called twice
   * without a `resume` in between. After a migration stop or `dev.quiesce()`
   * the library also holds back what slips through: DMA is refused (EBUSY)
   * and interrupts pend until the matching resume. Never wait for what the
   * guest or the client controls (queue space, replies to DMA messages): a
   * reset has `resetTimeoutMs` in all (see docs/writing-a-device.md, "Reset
   * and lifecycle"). `reason` says which: 'hold' (a migration stop or
   * `dev.quiesce()`: the state is saved or loaded next and the device resumes
   * as it was) or 'reset' (`onReset` follows and throws the work away anyway:
   * a device may skip the wait).
   */
  quiesce?: (reason: QuiesceReason) => void | Promise<void>;
  /**
   * Undo `quiesce`: start work again (re-arm timers, poll queues). Called
   * after every reset but 'shutdown' (after `onReset`), when a migration lets
   * the device run (STOP -> RUNNING, also after a state was loaded), and by
   * `dev.resume()`. Interrupts that pended while quiesced fire just before it.
   */
  resume?: () => void | Promise<void>;
  /** Put the device into its power-on state; called after `quiesce` resolved. */
  onReset?: (reason: ResetReason) => void | Promise<void>;
  /**
   * The longest a reset (quiesce + onReset) may take, in ms (default 3000,
   * DEFAULT_RESET_TIMEOUT_MS; keep it under QEMU's 5 s reply timeout).
   * Past it, accesses that waited for the reset go on, a DEVICE_RESET gets
   * an ETIMEDOUT error reply, the overrun is logged, and the device's
   * reset keeps running on its own: a stuck device shows, it does not hang
   * its client. A disconnect waits at most this long for the device to
   * release guest memory.
   */
  resetTimeoutMs?: number;
  /**
   * The device's own state (registers, queues...), saved and loaded with the
   * library's (config space, MSI-X, interrupts, BAR memory) for migration,
   * hot reload and live upgrade. Declare it with `defineDeviceState`. With it
   * (or `migrationStream`) the device can be migrated: VERSION advertises
   * the `migration` capability. See docs/writing-a-device.md, "State".
   */
  state?: DeviceState<unknown>;
  /**
   * Advanced: the device writes and reads the migration data itself, byte for
   * byte (the library's state is then not in it). For wire compatibility with
   * another implementation only; see MigrationDataStream.
   */
  migrationStream?: MigrationDataStream;
  /** Save memory-backed BAR contents with the state (default true). */
  saveBarMemory?: boolean;
  /**
   * Parent logger; the device logs through a child `{ device: name }`.
   * Default: one shared JSON logger on stderr at LOG_LEVEL (warn when unset).
   */
  log?: Logger | undefined;
  /**
   * DMA_MAP fds not sealed against shrinking, which a client could truncate
   * to crash the process (SIGBUS): 'map' them anyway (default, with a
   * warning; QEMU's memory-backend-file cannot be sealed), serve them by
   * 'messages' (safe, slower) or 'refuse' them (EPERM). See UnsealedFdPolicy.
   */
  unsealedDmaFds?: UnsealedFdPolicy;
}
