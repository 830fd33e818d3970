/**
 * Migration v2 from the client's side: the DEVICE_FEATURE features
 * (MIGRATION, MIG_DEVICE_STATE, DMA_LOGGING_START/STOP/REPORT) and
 * MIG_DATA_READ / MIG_DATA_WRITE, each checked against what the reply must be.
 */
import { Errno, VfioUserCommand } from '../protocol/constants.js';
import {
  DEVICE_FEATURE_SIZE,
  DMA_LOGGING_REPORT_SIZE,
  DeviceFeature,
  DeviceFeatureFlag,
  decodeMigDeviceStateData,
  decodeMigrationFeatureData,
  dirtyBitmapBytes,
  encodeDmaLoggingControl,
  encodeDmaLoggingReport,
  encodeMigDeviceStateData,
  isDirtyPage,
  type DmaLoggingRange,
} from '../protocol/features.js';
import { decodeMigDataReadReply, encodeMigDataReadRequest, encodeMigDataWriteRequest } from '../protocol/migration.js';
import { deviceFeature } from './device.js';
import { closeFds, protocolError, type RequestChannel } from './request-channel.js';

/** The data of a GET reply, after checking it carries at least `bytes` of it. */
function getData(reply: Uint8Array, bytes: number, what: string): Uint8Array {
  if (reply.byteLength < DEVICE_FEATURE_SIZE + bytes)
    throw protocolError(VfioUserCommand.DEVICE_FEATURE, `${what} reply of ${reply.byteLength} bytes`);
  return reply.subarray(DEVICE_FEATURE_SIZE);
}

/** VfioUserClient.migrationFlags: DEVICE_FEATURE GET MIGRATION's MigrationFlag bits. */
export async function migrationFlags(ch: RequestChannel): Promise<number> {
  const flags = DeviceFeatureFlag.GET | DeviceFeature.MIGRATION;
  return decodeMigrationFeatureData(getData(await deviceFeature(ch, flags, new Uint8Array(0), 16), 8, 'MIGRATION'));
}

/** VfioUserClient.migrationState: GET MIG_DEVICE_STATE. */
export async function migrationState(ch: RequestChannel): Promise<number> {
  const flags = DeviceFeatureFlag.GET | DeviceFeature.MIG_DEVICE_STATE;
  const reply = await deviceFeature(ch, flags, new Uint8Array(0), 16);
  return decodeMigDeviceStateData(getData(reply, 8, 'MIG_DEVICE_STATE')).deviceState;
}

/** VfioUserClient.setMigrationState: SET MIG_DEVICE_STATE (data_fd 0xffffffff, as the sample client sends). */
export async function setMigrationState(ch: RequestChannel, state: number): Promise<void> {
  const flags = DeviceFeatureFlag.SET | DeviceFeature.MIG_DEVICE_STATE;
  await deviceFeature(ch, flags, encodeMigDeviceStateData({ deviceState: state, dataFd: 0xffffffff }), 16);
}

/** VfioUserClient.probeFeature: whether PROBE with `ops` (GET/SET bits) succeeds. */
export async function probeFeature(ch: RequestChannel, feature: number, ops: number): Promise<boolean> {
  try {
    await deviceFeature(ch, DeviceFeatureFlag.PROBE | ops | feature, new Uint8Array(0), 8);
    return true;
  } catch (err) {
    // An error reply says "not supported"; a lost or late reply says nothing.
    const errno = (err as { errno?: number }).errno;
    if (errno === undefined || errno === Errno.ECONNRESET || errno === Errno.ETIMEDOUT || errno === Errno.EPROTO)
      throw err;
    return false;
  }
}

/** VfioUserClient.readMigrationData: one MIG_DATA_READ of at most `size` bytes (fewer: the end of the data). */
export async function readMigrationData(ch: RequestChannel, size: number): Promise<Uint8Array> {
  const r = await ch.typed(VfioUserCommand.MIG_DATA_READ, (id) => encodeMigDataReadRequest(id, size));
  closeFds(r.fds);
  const m = decodeMigDataReadReply(r.message);
  if (m.size > size) throw protocolError(VfioUserCommand.MIG_DATA_READ, `${m.size} bytes for a read of ${size}`);
  return new Uint8Array(m.data); // a copy of the reply's bytes
}

/** VfioUserClient.writeMigrationData: one MIG_DATA_WRITE. */
export async function writeMigrationData(ch: RequestChannel, data: Uint8Array): Promise<void> {
  const r = await ch.typed(VfioUserCommand.MIG_DATA_WRITE, (id) => encodeMigDataWriteRequest(id, data));
  closeFds(r.fds);
}

/** VfioUserClient.startDirtyLogging: DMA_LOGGING_START (no ranges: every write); resolves with the page size the server chose. */
export async function startDirtyLogging(
  ch: RequestChannel,
  pageSize: bigint,
  ranges: readonly DmaLoggingRange[],
): Promise<bigint> {
  const data = encodeDmaLoggingControl({ pageSize, ranges: [...ranges] });
  const reply = await deviceFeature(
    ch,
    DeviceFeatureFlag.SET | DeviceFeature.DMA_LOGGING_START,
    data,
    8 + data.byteLength,
  );
  const echoed = getData(reply, 8, 'DMA_LOGGING_START');
  return new DataView(echoed.buffer, echoed.byteOffset, 8).getBigUint64(0, true);
}

/** VfioUserClient.stopDirtyLogging: DMA_LOGGING_STOP. */
export async function stopDirtyLogging(ch: RequestChannel): Promise<void> {
  const data = encodeDmaLoggingControl({ pageSize: 0n, ranges: [] });
  await deviceFeature(ch, DeviceFeatureFlag.SET | DeviceFeature.DMA_LOGGING_STOP, data, 8 + data.byteLength);
}

/** Pages written in an IOVA range, as DMA_LOGGING_REPORT returned them (and cleared them on the server). */
export class DirtyBitmap {
  constructor(
    readonly iova: bigint,
    readonly length: bigint,
    readonly pageSize: bigint,
    /** One bit per page, LSB first, whole u64s. */
    readonly bytes: Uint8Array,
  ) {}

  /** Pages in the range. */
  get pages(): number {
    return Number((this.length + this.pageSize - 1n) / this.pageSize);
  }

  /** Whether page `page` (0 = the page at `iova`) was written. */
  isDirty(page: number): boolean {
    return isDirtyPage(this.bytes, page);
  }

  /** The indexes of the written pages, in order. */
  dirtyPages(): number[] {
    const out: number[] = [];
    for (let p = 0; p < this.pages; p++) if (this.isDirty(p)) out.push(p);
    return out;
  }
}

/** VfioUserClient.dirtyBitmap: DMA_LOGGING_REPORT of [iova, iova+length), read and cleared on the server. */
export async function dirtyBitmap(
  ch: RequestChannel,
  iova: bigint,
  length: bigint,
  pageSize: bigint,
): Promise<DirtyBitmap> {
  const bitmap = dirtyBitmapBytes(length, pageSize);
  const argsz = DEVICE_FEATURE_SIZE + DMA_LOGGING_REPORT_SIZE + Number(bitmap);
  const reply = await deviceFeature(
    ch,
    DeviceFeatureFlag.GET | DeviceFeature.DMA_LOGGING_REPORT,
    encodeDmaLoggingReport({ iova, length, pageSize }),
    argsz,
  );
  const data = getData(reply, DMA_LOGGING_REPORT_SIZE + Number(bitmap), 'DMA_LOGGING_REPORT');
  return new DirtyBitmap(
    iova,
    length,
    pageSize,
    data.slice(DMA_LOGGING_REPORT_SIZE, DMA_LOGGING_REPORT_SIZE + Number(bitmap)),
  );
}
