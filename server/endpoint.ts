/**
 * The seam between the protocol (server/connection: one client at a time, its
 * messages decoded and validated) and a device model (server/pci: config space,
 * BARs, IRQs, DMA). libvfio-user's vfu_ctx plays both roles; we keep them apart
 * so a connection can be tested against any Endpoint and a device never sees bytes
 * of the wire.
 *
 * Division of checks: the connection validates everything that is a matter
 * of the protocol (sizes, argsz, index < numRegions/numIrqs, offset+count
 * within the region's size and the region's READ/WRITE flag, DMA_MAP size 0,
 * > 8 TiB and wrap-around, SET_IRQS flag combinations and ranges, fd counts)
 * and answers with libvfio-user's errno. The endpoint validates meaning (DMA
 * map overlaps, the number of maps, unknown unmap ranges, config-space write
 * rules) and throws a VfioUserError carrying the errno to answer. Region
 * accesses and DMA ranges are checked by the connection only: an endpoint
 * never sees an access outside a region it described, nor an empty or
 * wrapping DMA range.
 */
import type { Logger } from 'pino';

export interface SparseArea {
  offset: bigint;
  size: bigint;
}

/**
 * What the device says about one of its regions (Endpoint.regionInfo). The
 * connection turns it into the DEVICE_GET_REGION_INFO reply (the codec's
 * RegionInfoMessage plus its capability chain) and checks every REGION_READ
 * and REGION_WRITE against its size and flags.
 */
export interface RegionDescription {
  /** RegionFlag bits (READ, WRITE, MMAP); CAPS is set by the codec when a cap chain is sent. */
  flags: number;
  /** 0 for a region the device does not have. */
  size: bigint;
  /** Offset within `fd` where the region starts (for mmap). */
  offset: bigint;
  /** With MMAP: the parts the client may map (the rest is trapped). Omitted: the whole region. */
  sparseAreas?: SparseArea[];
  /** With MMAP: an fd backing the region. Owned by the endpoint: the connection sends it and never closes it. */
  fd?: number;
  /** Device-specific regions (index >= 9) carry a TYPE capability. */
  regionType?: { type: number; subtype: number };
}

export interface IrqInfo {
  /** IrqInfoFlag bits. */
  flags: number;
  count: number;
}

export type ResetReason =
  /** DEVICE_RESET from the client. */
  | 'client'
  /** Function-level reset through the PCIe capability. */
  | 'flr'
  /** The client disconnected (or was dropped). */
  | 'lost-connection'
  /** The daemon is stopping. */
  | 'shutdown';

/** A validated DEVICE_SET_IRQS. */
export interface SetIrqsRequest {
  /** IrqSetFlag bits: exactly one DATA_* and one ACTION_*. */
  flags: number;
  index: number;
  start: number;
  count: number;
  /** DATA_BOOL: `count` bytes. */
  bools?: Uint8Array;
}

/** A DMA_MAP with its fd, if any. */
export interface DmaMapRequest {
  /** DmaMapFlag bits. */
  flags: number;
  /** Offset into fd. */
  offset: bigint;
  /** Guest (IO virtual) address. */
  addr: bigint;
  size: bigint;
  /** Ownership passes to the endpoint (it closes it, now or on unmap). */
  fd?: number;
}

/** What the connection offers the device while a client is attached. */
export interface ClientPort {
  /** Server-to-client DMA_READ (chunked by the client's max_data_xfer_size). Rejects with VfioUserError. */
  dmaRead(addr: bigint, length: number): Promise<Uint8Array>;
  /** Server-to-client DMA_WRITE. */
  dmaWrite(addr: bigint, data: Uint8Array): Promise<void>;
  /** Chunk size of dmaRead/dmaWrite: min(the client's max_data_xfer_size, ours). */
  readonly maxDataXferSize: number;
  /** The connection's logger. */
  readonly log: Logger;
}

/** A range DMA_LOGGING_START asks to log. */
export interface DirtyLogRange {
  iova: bigint;
  length: bigint;
}

/**
 * Migration v2 and dirty-page logging, for an Endpoint that can save and load
 * its state (Endpoint.migration). The connection checks the wire (sizes,
 * argsz, flag combinations) and calls these; they check meaning and throw a
 * VfioUserError with the errno to answer. PciDevice provides one when it has
 * a DeviceState or a MigrationDataStream (server/migration/device-migration.ts).
 */
export interface MigrationEndpoint {
  /** MigrationFlag bits (STOP_COPY at least): DEVICE_FEATURE MIGRATION's GET. */
  readonly flags: number;
  /** The current device_state (a MigrationState value). */
  readonly state: number;
  /**
   * MIG_DEVICE_STATE SET: walk to `target`, one arc at a time, each complete
   * before the next. EINVAL for a change the state machine does not allow
   * (state unchanged); a failing step rejects with its errno and leaves the
   * state where it was before the request (or ERROR when that cannot be restored).
   */
  setState(target: number): Promise<void>;
  /** MIG_DATA_READ in PRE_COPY/STOP_COPY: at most `max` bytes; fewer means the data ends. EINVAL in other states. */
  readData(max: number): Promise<Uint8Array>;
  /** MIG_DATA_WRITE in RESUMING (EINVAL otherwise, and for data the device cannot take). */
  writeData(data: Uint8Array): Promise<void>;
  /** DMA_LOGGING_START (see DmaSpace.startDirtyLogging for the errno). */
  startDirtyLogging(pageSize: bigint, ranges: readonly DirtyLogRange[]): void;
  /** DMA_LOGGING_STOP. */
  stopDirtyLogging(): void;
  /** DMA_LOGGING_REPORT: the bitmap (whole u64s), read and cleared (see DmaSpace.reportDirty). */
  reportDirty(iova: bigint, length: bigint, pageSize: bigint): Uint8Array;
}

export interface Endpoint {
  /** Stable name, used in logs. */
  readonly name: string;
  /** DEVICE_GET_INFO: num_regions (>= 9 for PCI). */
  readonly numRegions: number;
  /** DEVICE_GET_INFO: num_irqs (5 for PCI). */
  readonly numIrqs: number;
  /** DEVICE_GET_INFO: whether DEVICE_RESET is supported (flag RESET). */
  readonly resetSupported: boolean;
  /**
   * Present for a device that can be migrated: VERSION then advertises the
   * `migration` capability and DEVICE_FEATURE / MIG_DATA_* are served.
   * Absent: those are EINVAL, as libvfio-user answers without migration callbacks.
   */
  readonly migration?: MigrationEndpoint | undefined;

  regionInfo(index: number): RegionDescription;
  irqInfo(index: number): IrqInfo;

  /**
   * The connection has checked the access: index < numRegions, count > 0,
   * offset + count <= regionInfo(index).size, and the region's READ (or WRITE) flag.
   */
  regionRead(index: number, offset: bigint, count: number): Uint8Array | Promise<Uint8Array>;
  regionWrite(index: number, offset: bigint, data: Uint8Array): void | Promise<void>;

  /** fds: ownership passes to the endpoint (it closes replaced and unused ones). */
  setIrqs(request: SetIrqsRequest, fds: number[]): void;

  /** The connection has checked the range: size > 0, at most 8 TiB, addr + size <= 2^64. */
  dmaMap(request: DmaMapRequest): void | Promise<void>;
  /** `all`: DMA_UNMAP with flag ALL (addr and size are 0). Resolves once no device access to the range is in flight. */
  dmaUnmap(addr: bigint, size: bigint, all: boolean): void | Promise<void>;

  /** Resolves when the device has quiesced and reset. */
  reset(reason: ResetReason): Promise<void>;

  /** A client negotiated VERSION. At most one is attached at a time. */
  attach(port: ClientPort): void;
  /** The client is gone: unmap all DMA, close every IRQ eventfd, reset('lost-connection'). */
  detach(): Promise<void>;
}
