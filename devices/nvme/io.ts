/**
 * NVM command set: Read, Write, Flush, Write Zeroes, Dataset Management,
 * Compare. With fd-backed guest memory, file I/O goes straight into or out
 * of guest memory: a Read the page cache holds is done synchronously
 * (preadv2 RWF_NOWAIT), anything else on the thread pool with the guest
 * pages pinned (DMA_UNMAP waits). With fd-less memory, data moves through a
 * host buffer and DMA messages.
 *
 * Each command takes `ctx.dma` once, when it starts (a controller reset
 * revokes it: see command-dma.ts), and logs host failures through the
 * controller's LogLimiter (a guest can make them frequent). Bounce buffers
 * (fd-less guest memory, Compare) come out of the controller's
 * BufferBudget, so 256 commands in flight cannot make us hold 256 MiB.
 */
import { IoOp, MAX_TRANSFER, Status } from './constants.js';
import type { IoContext } from './context.js';
import { NvmeStatusError } from './host.js';
import type { Namespace } from './namespace.js';
import { copyFromGuest, copyToGuest, prpSegments, prpSegmentsSync } from './prp.js';
import type { SubmissionEntry, CommandResult } from './queues.js';

const OK: CommandResult = { status: Status.SUCCESS };
const ALL_NAMESPACES = 0xffffffff;

function fail(status: number, why: string): never {
  throw new NvmeStatusError(status, why);
}

function namespaceOf(ctx: IoContext, cmd: SubmissionEntry): Namespace {
  return ctx.namespaces.get(cmd.nsid) ?? fail(Status.INVALID_NAMESPACE, `no namespace ${cmd.nsid}`);
}

/** Starting LBA, block count and their byte position/length, range-checked. */
function lbaRange(ns: Namespace, cmd: SubmissionEntry): { position: number; length: number; blocks: number } {
  const slba = cmd.cdw10 + cmd.cdw11 * 0x1_0000_0000;
  const blocks = (cmd.cdw12 & 0xffff) + 1;
  if (!Number.isSafeInteger(slba) || slba + blocks > ns.blocks)
    fail(Status.LBA_OUT_OF_RANGE, `LBA ${slba}+${blocks} past ${ns.blocks}`);
  return { position: slba * ns.lbaSize, length: blocks * ns.lbaSize, blocks };
}

/**
 * Run one I/O command: a result when it finished synchronously (a read the
 * page cache could serve), else a promise. May throw NvmeStatusError
 * synchronously for bad fields.
 */
export function executeIo(ctx: IoContext, cmd: SubmissionEntry): CommandResult | Promise<CommandResult> {
  if (cmd.fuse !== 0) fail(Status.INVALID_FIELD, 'fused commands are not supported');
  switch (cmd.opcode) {
    case IoOp.READ:
      return readNow(ctx, cmd) ?? readCmd(ctx, cmd);
    case IoOp.WRITE:
      return writeCmd(ctx, cmd);
    case IoOp.FLUSH:
      return flushCmd(ctx, cmd);
    case IoOp.WRITE_ZEROES:
      return writeZeroes(ctx, cmd);
    case IoOp.DATASET_MANAGEMENT:
      return datasetManagement(ctx, cmd);
    case IoOp.COMPARE:
      return compare(ctx, cmd);
    default:
      return fail(Status.INVALID_OPCODE, `I/O opcode 0x${cmd.opcode.toString(16)}`);
  }
}

function checkTransfer(cmd: SubmissionEntry, length: number): void {
  if (cmd.psdt !== 0) fail(Status.INVALID_FIELD, 'SGLs are not supported');
  if (length > MAX_TRANSFER) fail(Status.INVALID_FIELD, `transfer of ${length} bytes exceeds MDTS`);
}

/**
 * The fast path of Read: fd-backed guest memory, PRP lists readable in place
 * and data in the page cache (or a memory namespace): done before returning,
 * no promise, no thread pool. Undefined when any of that fails (readCmd then
 * does the whole command; a partial cache read here is simply redone).
 */
function readNow(ctx: IoContext, cmd: SubmissionEntry): CommandResult | undefined {
  const ns = namespaceOf(ctx, cmd);
  const { position, length, blocks } = lbaRange(ns, cmd);
  checkTransfer(cmd, length);
  const dma = ctx.dma;
  const segments = prpSegmentsSync(dma, cmd.prp1, cmd.prp2, length);
  if (!segments) return undefined;
  const pinned = dma.pin?.(segments);
  if (!pinned) return undefined;
  let done: boolean;
  try {
    done = ns.readvNow(position, pinned.views);
  } finally {
    pinned.release();
  }
  if (!done) return undefined;
  ctx.health.readCommands++;
  ctx.health.blocksRead += BigInt(blocks << (ns.lbaShift - 9));
  return OK;
}

async function readCmd(ctx: IoContext, cmd: SubmissionEntry): Promise<CommandResult> {
  const dma = ctx.dma;
  const ns = namespaceOf(ctx, cmd);
  const { position, length, blocks } = lbaRange(ns, cmd);
  checkTransfer(cmd, length);
  const segments = await prpSegments(dma, cmd.prp1, cmd.prp2, length);
  // fd-backed guest memory: preadv straight into it (held mapped meanwhile); else through a buffer.
  const pinned = dma.pin?.(segments);
  try {
    if (pinned) {
      await ns.readv(position, pinned.views);
    } else {
      await ctx.buffers.take(length);
      try {
        const buf = Buffer.allocUnsafe(length);
        await ns.read(position, buf);
        await copyToGuest(dma, segments, buf);
      } finally {
        ctx.buffers.release(length);
      }
    }
  } catch (err) {
    if (err instanceof NvmeStatusError) throw err;
    ctx.limiter.error('read-failed', { err, nsid: ns.nsid, position, length }, 'nvme: read failed');
    fail(Status.INTERNAL_ERROR, 'backing read failed');
  } finally {
    pinned?.release();
  }
  ctx.health.readCommands++;
  ctx.health.blocksRead += BigInt(blocks << (ns.lbaShift - 9));
  return OK;
}

async function writeCmd(ctx: IoContext, cmd: SubmissionEntry): Promise<CommandResult> {
  const dma = ctx.dma;
  const ns = namespaceOf(ctx, cmd);
  const { position, length, blocks } = lbaRange(ns, cmd);
  checkTransfer(cmd, length);
  const segments = await prpSegments(dma, cmd.prp1, cmd.prp2, length);
  const fua = (cmd.cdw12 >>> 30) & 1;
  const pinned = dma.pin?.(segments, 'read'); // the data only leaves guest memory: no dirty pages
  const buffered = pinned ? 0 : length;
  let buf: Uint8Array | undefined;
  if (buffered) {
    await ctx.buffers.take(buffered);
    try {
      buf = Buffer.allocUnsafe(length);
      await copyFromGuest(dma, segments, buf);
    } catch (err) {
      ctx.buffers.release(buffered);
      throw err;
    }
  }
  try {
    try {
      if (pinned) await ns.writev(position, pinned.views);
      else await ns.write(position, buf!);
    } finally {
      pinned?.release(); // the data is in the file: guest memory is free before any fdatasync
      if (buffered) ctx.buffers.release(buffered);
    }
    // Without a volatile write cache (or with Force Unit Access), acknowledged means on disk.
    if (!ctx.features.volatileWriteCache || fua) await ns.flush();
  } catch (err) {
    ctx.limiter.error('write-failed', { err, nsid: ns.nsid, position, length }, 'nvme: write failed');
    fail(Status.INTERNAL_ERROR, 'backing write failed');
  }
  ctx.health.writeCommands++;
  ctx.health.blocksWritten += BigInt(blocks << (ns.lbaShift - 9));
  return OK;
}

async function flushCmd(ctx: IoContext, cmd: SubmissionEntry): Promise<CommandResult> {
  try {
    if (cmd.nsid === ALL_NAMESPACES) await ctx.flushAll();
    else await namespaceOf(ctx, cmd).flush();
  } catch (err) {
    if (err instanceof NvmeStatusError) throw err;
    ctx.limiter.error('flush-failed', { err }, 'nvme: flush failed');
    fail(Status.INTERNAL_ERROR, 'fdatasync failed');
  }
  return OK;
}

/**
 * Write Zeroes: fallocate ZERO_RANGE (or written zeros). With DEAC (CDW12
 * bit 25) on a namespace whose deallocated blocks read as zeros (DLFEAT
 * 0x09), the range is deallocated instead (a hole punched).
 */
async function writeZeroes(ctx: IoContext, cmd: SubmissionEntry): Promise<CommandResult> {
  const ns = namespaceOf(ctx, cmd);
  const { position, length } = lbaRange(ns, cmd);
  const deac = ((cmd.cdw12 >>> 25) & 1) === 1;
  try {
    if (deac && ns.deallocateReadsZeroes) await ns.deallocate(position, length);
    else await ns.zero(position, length);
    if (!ctx.features.volatileWriteCache || (cmd.cdw12 >>> 30) & 1) await ns.flush();
  } catch (err) {
    ctx.limiter.error('write-zeroes-failed', { err }, 'nvme: write zeroes failed');
    fail(Status.INTERNAL_ERROR, 'backing write failed');
  }
  return OK;
}

/** DSM attribute Deallocate (CDW11 bit 2); IDR (bit 0) and IDW (bit 1) are access hints we ignore. */
const DSM_ATTR_DEALLOCATE = 1 << 2;

/**
 * Dataset Management: up to 256 ranges (NR, CDW10 7:0, zero-based) of 16
 * bytes each (context attributes, NLB, SLBA). Every range is checked before
 * anything happens (one bad range: LBA Out of Range and no effect). With
 * AD set each range is deallocated (file: hole punched; memory: zeroed) and
 * reads as zeros afterwards where Identify reported DLFEAT 0x09.
 *
 * The work is bounded by the namespace, not by what the guest names:
 * overlapping and adjacent ranges are merged first (256 ranges over the
 * whole namespace deallocate it once), and memory namespaces zero in
 * slices with a loop turn between them (namespace.ts).
 */
async function datasetManagement(ctx: IoContext, cmd: SubmissionEntry): Promise<CommandResult> {
  const dma = ctx.dma;
  const ns = namespaceOf(ctx, cmd);
  const ranges = (cmd.cdw10 & 0xff) + 1;
  if (cmd.psdt !== 0) fail(Status.INVALID_FIELD, 'SGLs are not supported');
  const segments = await prpSegments(dma, cmd.prp1, cmd.prp2, ranges * 16);
  const buf = new Uint8Array(ranges * 16);
  await copyFromGuest(dma, segments, buf);
  const v = new DataView(buf.buffer);
  const extents: { start: number; end: number }[] = [];
  for (let i = 0; i < ranges; i++) {
    const nlb = v.getUint32(i * 16 + 4, true);
    const slba = Number(v.getBigUint64(i * 16 + 8, true));
    if (!Number.isSafeInteger(slba) || slba + nlb > ns.blocks)
      fail(Status.LBA_OUT_OF_RANGE, `DSM range ${i}: LBA ${slba}+${nlb} past ${ns.blocks}`);
    if (nlb > 0) extents.push({ start: slba, end: slba + nlb });
  }
  if ((cmd.cdw11 & DSM_ATTR_DEALLOCATE) === 0) return OK;
  try {
    for (const { start, end } of mergeExtents(extents))
      await ns.deallocate(start * ns.lbaSize, (end - start) * ns.lbaSize);
    if (!ctx.features.volatileWriteCache) await ns.flush();
  } catch (err) {
    ctx.limiter.error('deallocate-failed', { err, nsid: ns.nsid }, 'nvme: deallocate failed');
    fail(Status.INTERNAL_ERROR, 'backing deallocate failed');
  }
  return OK;
}

/** Block ranges [start, end) sorted and merged where they overlap or touch. */
function mergeExtents(extents: { start: number; end: number }[]): { start: number; end: number }[] {
  extents.sort((a, b) => a.start - b.start);
  const merged: { start: number; end: number }[] = [];
  for (const e of extents) {
    const last = merged.at(-1);
    if (last && e.start <= last.end) last.end = Math.max(last.end, e.end);
    else merged.push({ ...e });
  }
  return merged;
}

async function compare(ctx: IoContext, cmd: SubmissionEntry): Promise<CommandResult> {
  const dma = ctx.dma;
  const ns = namespaceOf(ctx, cmd);
  const { position, length } = lbaRange(ns, cmd);
  checkTransfer(cmd, length);
  const segments = await prpSegments(dma, cmd.prp1, cmd.prp2, length);
  await ctx.buffers.take(2 * length);
  try {
    const guest = new Uint8Array(length);
    await copyFromGuest(dma, segments, guest);
    const disk = new Uint8Array(length);
    await ns.read(position, disk);
    return Buffer.from(guest.buffer).equals(Buffer.from(disk.buffer)) ? OK : { status: Status.COMPARE_FAILURE };
  } finally {
    ctx.buffers.release(2 * length);
  }
}
