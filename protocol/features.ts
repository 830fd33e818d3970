/**
 * DEVICE_FEATURE (16): argsz u32 @0, flags u32 @4 (bits 0-15 feature, GET 1<<16,
 * SET 1<<17, PROBE 1<<18), data @8; reply: same layout (GET appends data and
 * grows argsz; SET and PROBE echo the request).
 *
 * The features are the kernel's VFIO migration v2 ones (include/uapi/linux/vfio.h,
 * mirrored by QEMU's docs/interop/vfio-user.rst): MIGRATION, MIG_DEVICE_STATE and
 * the DMA_LOGGING_* trio. Their data layouts are here, one struct each, so the
 * server's handler and the client encode and decode the same bytes.
 */
import { ProtocolError } from './errors.js';
import { HEADER_SIZE, VfioUserCommand } from './constants.js';
import { newReply, newRequest, readU32, readU64, requirePayload, writeU32, writeU64 } from './header.js';

/** Bytes of argsz + flags before a feature's data. */
export const DEVICE_FEATURE_SIZE = 8;

export const DeviceFeatureFlag = {
  MASK: 0xffff,
  GET: 1 << 16,
  SET: 1 << 17,
  PROBE: 1 << 18,
} as const;

/** Feature indexes (the low 16 bits of flags; VFIO_DEVICE_FEATURE_*). */
export const DeviceFeature = {
  MIGRATION: 1,
  MIG_DEVICE_STATE: 2,
  DMA_LOGGING_START: 6,
  DMA_LOGGING_STOP: 7,
  DMA_LOGGING_REPORT: 8,
} as const;

/** Bits of the MIGRATION feature's u64 flags (VFIO_MIGRATION_*). */
export const MigrationFlag = { STOP_COPY: 1 << 0, P2P: 1 << 1, PRE_COPY: 1 << 2 } as const;

/**
 * device_state values of the migration v2 state machine (enum vfio_device_mig_state).
 * The spec marks the two P2P states "not used in vfio-user".
 */
export const MigrationState = {
  ERROR: 0,
  STOP: 1,
  RUNNING: 2,
  STOP_COPY: 3,
  RESUMING: 4,
  RUNNING_P2P: 5,
  PRE_COPY: 6,
  PRE_COPY_P2P: 7,
} as const;

export type MigrationStateName = keyof typeof MigrationState;

const stateNames: string[] = [];
for (const [name, value] of Object.entries(MigrationState)) stateNames[value] = name;

/** The name of a device_state value ('STATE(n)' for others). */
export function migrationStateName(state: number): string {
  return stateNames[state] ?? `STATE(${state})`;
}

export interface DeviceFeatureMessage {
  argsz: number;
  flags: number;
  /** A view into the message. */
  data: Uint8Array;
}

export function encodeDeviceFeatureRequest(
  id: number,
  f: Omit<DeviceFeatureMessage, 'argsz'> & { argsz?: number },
): Uint8Array {
  const m = newRequest(id, VfioUserCommand.DEVICE_FEATURE, DEVICE_FEATURE_SIZE + f.data.byteLength);
  m.view.setUint32(16, (f.argsz ?? DEVICE_FEATURE_SIZE + f.data.byteLength) >>> 0, true);
  m.view.setUint32(20, f.flags >>> 0, true);
  m.bytes.set(f.data, 24);
  return m.bytes;
}

/** Request and reply share the layout. EINVAL if the payload is shorter than 8 bytes. */
export function decodeDeviceFeature(msg: Uint8Array): DeviceFeatureMessage {
  const dv = requirePayload(msg, DEVICE_FEATURE_SIZE, VfioUserCommand.DEVICE_FEATURE);
  return { argsz: dv.getUint32(16, true), flags: dv.getUint32(20, true), data: msg.subarray(24) };
}

/** A DEVICE_FEATURE reply: argsz, flags, then `data` (argsz = 8 + data length unless given). */
export function encodeDeviceFeatureReply(id: number, flags: number, data: Uint8Array, argsz?: number): Uint8Array {
  const m = newReply(id, VfioUserCommand.DEVICE_FEATURE, DEVICE_FEATURE_SIZE + data.byteLength);
  writeU32(m.bytes, HEADER_SIZE, argsz ?? DEVICE_FEATURE_SIZE + data.byteLength);
  writeU32(m.bytes, HEADER_SIZE + 4, flags);
  m.bytes.set(data, HEADER_SIZE + DEVICE_FEATURE_SIZE);
  return m.bytes;
}

function need(data: Uint8Array, bytes: number, what: string): void {
  if (data.byteLength < bytes) throw ProtocolError.invalid(`${what}: ${data.byteLength} data bytes, need ${bytes}`);
}

// ---- MIGRATION (1): GET data = u64 flags

/** Bytes of the MIGRATION feature's data. */
const MIGRATION_FEATURE_DATA_SIZE = 8;

export function encodeMigrationFeatureData(flags: number): Uint8Array {
  const out = new Uint8Array(MIGRATION_FEATURE_DATA_SIZE);
  writeU64(out, 0, BigInt(flags));
  return out;
}

/** The MigrationFlag bits (a u64 on the wire; only the low 32 bits carry meaning). */
export function decodeMigrationFeatureData(data: Uint8Array): number {
  need(data, MIGRATION_FEATURE_DATA_SIZE, 'MIGRATION');
  return Number(readU64(data, 0) & 0xffffffffn);
}

// ---- MIG_DEVICE_STATE (2): device_state u32, data_fd u32

export interface MigDeviceState {
  /** A MigrationState value. */
  deviceState: number;
  /** Unused in vfio-user (the kernel's data fd); echoed as sent, 0 in a GET reply. */
  dataFd: number;
}

/** Bytes of the MIG_DEVICE_STATE feature's data. */
const MIG_DEVICE_STATE_DATA_SIZE = 8;

export function encodeMigDeviceStateData(s: MigDeviceState): Uint8Array {
  const out = new Uint8Array(MIG_DEVICE_STATE_DATA_SIZE);
  writeU32(out, 0, s.deviceState);
  writeU32(out, 4, s.dataFd);
  return out;
}

/** EINVAL when fewer than 8 data bytes (libvfio-user reads past the message there). */
export function decodeMigDeviceStateData(data: Uint8Array): MigDeviceState {
  need(data, MIG_DEVICE_STATE_DATA_SIZE, 'MIG_DEVICE_STATE');
  return { deviceState: readU32(data, 0), dataFd: readU32(data, 4) };
}

// ---- DMA_LOGGING_START (6) / STOP (7): page_size u64, num_ranges u32, reserved u32, ranges {iova u64, length u64}[]

export interface DmaLoggingRange {
  iova: bigint;
  length: bigint;
}

export interface DmaLoggingControl {
  pageSize: bigint;
  /** Empty: log every write. */
  ranges: DmaLoggingRange[];
}

/** Bytes of the control struct before the ranges, and of one range. */
const DMA_LOGGING_CONTROL_SIZE = 16;
const DMA_LOGGING_RANGE_SIZE = 16;

export function encodeDmaLoggingControl(c: DmaLoggingControl): Uint8Array {
  const out = new Uint8Array(DMA_LOGGING_CONTROL_SIZE + DMA_LOGGING_RANGE_SIZE * c.ranges.length);
  writeU64(out, 0, c.pageSize);
  writeU32(out, 8, c.ranges.length);
  c.ranges.forEach((r, i) => {
    writeU64(out, DMA_LOGGING_CONTROL_SIZE + i * DMA_LOGGING_RANGE_SIZE, r.iova);
    writeU64(out, DMA_LOGGING_CONTROL_SIZE + i * DMA_LOGGING_RANGE_SIZE + 8, r.length);
  });
  return out;
}

/**
 * EINVAL when the data is shorter than the control struct or than the
 * num_ranges ranges it announces (libvfio-user reads past the message there).
 */
export function decodeDmaLoggingControl(data: Uint8Array): DmaLoggingControl {
  need(data, DMA_LOGGING_CONTROL_SIZE, 'DMA_LOGGING_START');
  const count = readU32(data, 8);
  const bytes = DMA_LOGGING_CONTROL_SIZE + count * DMA_LOGGING_RANGE_SIZE;
  if (data.byteLength < bytes) {
    throw ProtocolError.invalid(`DMA_LOGGING_START: ${count} ranges announced, ${data.byteLength} data bytes`);
  }
  const ranges: DmaLoggingRange[] = [];
  for (let i = 0; i < count; i++) {
    const at = DMA_LOGGING_CONTROL_SIZE + i * DMA_LOGGING_RANGE_SIZE;
    ranges.push({ iova: readU64(data, at), length: readU64(data, at + 8) });
  }
  return { pageSize: readU64(data, 0), ranges };
}

// ---- DMA_LOGGING_REPORT (8): iova u64, length u64, page_size u64; reply: the same + bitmap (u64s)

export interface DmaLoggingReport {
  iova: bigint;
  length: bigint;
  pageSize: bigint;
}

/** Bytes of the report struct before the bitmap. */
export const DMA_LOGGING_REPORT_SIZE = 24;

export function encodeDmaLoggingReport(r: DmaLoggingReport): Uint8Array {
  const out = new Uint8Array(DMA_LOGGING_REPORT_SIZE);
  writeU64(out, 0, r.iova);
  writeU64(out, 8, r.length);
  writeU64(out, 16, r.pageSize);
  return out;
}

/** EINVAL when fewer than 24 data bytes. */
export function decodeDmaLoggingReport(data: Uint8Array): DmaLoggingReport {
  need(data, DMA_LOGGING_REPORT_SIZE, 'DMA_LOGGING_REPORT');
  return { iova: readU64(data, 0), length: readU64(data, 8), pageSize: readU64(data, 16) };
}

/**
 * Bytes of the bitmap for `length` bytes at `pageSize` granularity: one bit
 * per page (the last one partial), rounded up to whole u64s. The caller
 * checked pageSize > 0.
 */
export function dirtyBitmapBytes(length: bigint, pageSize: bigint): bigint {
  const pages = (length + pageSize - 1n) / pageSize;
  return ((pages + 63n) / 64n) * 8n;
}

/** Whether page `page` (0 = the page at the report's iova) is set in a REPORT bitmap (bit page%64 of u64 page/64, LSB first). */
export function isDirtyPage(bitmap: Uint8Array, page: number): boolean {
  const at = page >>> 3;
  return at < bitmap.byteLength && (bitmap[at]! & (1 << (page & 7))) !== 0;
}
