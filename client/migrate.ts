/**
 * migrate(source, destination): what a VMM does to move a device from one
 * server to another, with the client's own guest memory kept in step:
 *
 * 1. both devices must migrate (DEVICE_FEATURE MIGRATION, STOP_COPY at least);
 * 2. with `memory`: dirty-page logging starts on the source, then every page
 *    is copied to the destination's memory;
 * 3. pre-copy (when asked and offered): PRE_COPY, its data read to the end
 *    while the device runs, dirty pages copied round after round;
 * 4. stop-copy (after `beforeStopCopy`, where a VMM stops the vCPUs):
 *    STOP_COPY (the device stops), its data read to the end, the
 *    last dirty pages copied, logging stopped, the source left in STOP;
 * 5. the destination: RESUMING, all the data (pre-copy then stop-copy) in
 *    chunks, then RUNNING (which walks through STOP, where the data is
 *    loaded: a refused state fails here, with the destination still RESUMING).
 *
 * The destination's DMA maps and interrupts are the caller's, as a VMM sets
 * them up when it realizes the device: map memory and enable IRQs on the
 * destination before or after (its eventfds then deliver what pended).
 */
import { MigrationFlag, MigrationState } from '../protocol/features.js';
import type { VfioUserClient } from './vfio-user-client.js';
import { VfioUserClientError } from './errors.js';
import { VfioUserCommand, Errno } from '../protocol/constants.js';

/** One DMA map of guest memory as both sides hold it. */
export interface MigrationMemory {
  /** The map's IOVA (the base of one DMA_MAP on the source: dirty reports are per map). */
  iova: bigint;
  /** The bytes the source device sees at iova (e.g. the source client's GuestMemory or DmaRange bytes). */
  source: Uint8Array;
  /** Where they go: the destination's memory for the same range (same length). */
  destination: Uint8Array;
}

export interface MigrateOptions {
  /** Use PRE_COPY when the source offers it (default true). */
  preCopy?: boolean;
  /** Pre-copy rounds of dirty-page copying at most (default 4); they also end when a round finds nothing dirty. */
  maxPreCopyRounds?: number;
  /** Guest memory to copy, tracked with dirty-page logging on the source. */
  memory?: readonly MigrationMemory[];
  /** Dirty-logging page size (default 4096). */
  pageSize?: number;
  /** Bytes per MIG_DATA_READ/WRITE (default: the largest both sides accept). */
  chunkSize?: number;
  /**
   * Called after pre-copy, right before STOP_COPY: where a VMM stops the
   * guest's vCPUs (from then on only the device writes guest memory, and the
   * dirty bitmaps see all of it).
   */
  beforeStopCopy?: () => void | Promise<void>;
  /** Called once the source is stopped and all its data read, before the destination gets it. */
  onSourceStopped?: () => void | Promise<void>;
}

export interface MigrationReport {
  /** Bytes of migration data read in PRE_COPY and in STOP_COPY. */
  preCopyBytes: number;
  stopCopyBytes: number;
  /** Pre-copy rounds of dirty-page copying. */
  rounds: number;
  /** Pages copied in the first full copy and in dirty rounds (including the last, after the stop). */
  fullPages: number;
  dirtyPages: number;
}

function chunkSizeFor(source: VfioUserClient, destination: VfioUserClient, asked?: number): number {
  const limit = Math.min(
    source.maxDataXferSize,
    source.serverMaxDataXferSize,
    destination.maxDataXferSize,
    destination.serverMaxDataXferSize,
  );
  return Math.max(1, Math.min(asked ?? limit, limit));
}

async function copyDirty(
  source: VfioUserClient,
  memory: readonly MigrationMemory[],
  pageSize: number,
): Promise<number> {
  let copied = 0;
  for (const m of memory) {
    const bitmap = await source.dirtyBitmap(m.iova, BigInt(m.source.byteLength), BigInt(pageSize));
    for (const page of bitmap.dirtyPages()) {
      const from = page * pageSize;
      m.destination.set(m.source.subarray(from, Math.min(from + pageSize, m.source.byteLength)), from);
      copied++;
    }
  }
  return copied;
}

/** Move the device behind `source` to the server behind `destination` (see the file comment). */
export async function migrate(
  source: VfioUserClient,
  destination: VfioUserClient,
  options: MigrateOptions = {},
): Promise<MigrationReport> {
  const flags = await source.migrationFlags();
  if (!(flags & MigrationFlag.STOP_COPY)) {
    throw new VfioUserClientError(Errno.ENOTSUP, VfioUserCommand.DEVICE_FEATURE, 'the source does not offer STOP_COPY');
  }
  await destination.migrationFlags();
  const memory = options.memory ?? [];
  for (const m of memory) {
    if (m.source.byteLength !== m.destination.byteLength)
      throw new RangeError(`migrate: memory at 0x${m.iova.toString(16)}: source and destination sizes differ`);
  }
  const pageSize = options.pageSize ?? 4096;
  const chunk = chunkSizeFor(source, destination, options.chunkSize);
  const report: MigrationReport = { preCopyBytes: 0, stopCopyBytes: 0, rounds: 0, fullPages: 0, dirtyPages: 0 };
  const data: Uint8Array[] = [];

  if (memory.length > 0) {
    await source.startDirtyLogging({ pageSize: BigInt(pageSize) });
    for (const m of memory) {
      m.destination.set(m.source);
      report.fullPages += Math.ceil(m.source.byteLength / pageSize);
    }
  }
  if ((options.preCopy ?? true) && flags & MigrationFlag.PRE_COPY) {
    await source.setMigrationState(MigrationState.PRE_COPY);
    const pre = await source.readMigrationStream(chunk);
    report.preCopyBytes = pre.byteLength;
    data.push(pre);
    for (let round = 0; round < (options.maxPreCopyRounds ?? 4) && memory.length > 0; round++) {
      report.rounds++;
      const pages = await copyDirty(source, memory, pageSize);
      report.dirtyPages += pages;
      if (pages === 0) break;
    }
  }
  await options.beforeStopCopy?.();
  await source.setMigrationState(MigrationState.STOP_COPY);
  const final = await source.readMigrationStream(chunk);
  report.stopCopyBytes = final.byteLength;
  data.push(final);
  if (memory.length > 0) {
    report.dirtyPages += await copyDirty(source, memory, pageSize);
    await source.stopDirtyLogging();
  }
  await source.setMigrationState(MigrationState.STOP);
  await options.onSourceStopped?.();

  await destination.setMigrationState(MigrationState.RESUMING);
  for (const d of data) await destination.writeMigrationStream(d, chunk);
  await destination.setMigrationState(MigrationState.RUNNING);
  return report;
}
