/**
 * DMA_MAP and DMA_UNMAP: wire-level validation (libvfio-user's errno), the
 * range itself (size 0, > 8 TiB, wrap-around) included: it is checked here
 * only. The endpoint (its DmaSpace) checks overlaps (EINVAL) and unknown
 * ranges (ENOENT).
 */
import { VfioUserError } from '../../../protocol/errors.js';
import {
  VfioUserCommand,
  DMA_MAP_SIZE,
  DMA_UNMAP_SIZE,
  DmaMapFlag,
  DmaUnmapFlag,
  Errno,
  Limits,
  decodeDmaMapRequest,
  decodeDmaUnmapRequest,
  encodeDmaMapReply,
  encodeDmaUnmapReply,
} from '../../../protocol/index.js';
import type { HandlerResult, RequestContext } from '../context.js';

const MAP_FLAGS = DmaMapFlag.READ | DmaMapFlag.WRITE | DmaMapFlag.MMAP | DmaMapFlag.FILE_IO;
/** libvfio-user's largest region on x86-64 (8 TiB): bigger is ENOSPC. */
const MAX_DMA_REGION_SIZE = 1n << 43n;
const U64_END = 1n << 64n;

async function handleDmaMap(ctx: RequestContext): Promise<HandlerResult> {
  const m = decodeDmaMapRequest(ctx.message);
  const what = `DMA_MAP 0x${m.addr.toString(16)}+0x${m.size.toString(16)} flags 0x${m.flags.toString(16)}`;
  if (m.argsz < DMA_MAP_SIZE) throw VfioUserError.invalid(`${what}: argsz ${m.argsz} < ${DMA_MAP_SIZE}`);
  if (m.flags & ~MAP_FLAGS) throw VfioUserError.invalid(`${what}: unknown flags`);
  if (ctx.fds.count > 1) throw VfioUserError.invalid(`${what}: ${ctx.fds.count} fds`);
  if (m.flags & (DmaMapFlag.MMAP | DmaMapFlag.FILE_IO) && ctx.fds.count === 0)
    throw VfioUserError.invalid(`${what}: MMAP/FILE_IO without an fd`);
  if (m.size === 0n) throw VfioUserError.invalid(`${what}: size 0`);
  if (m.size > MAX_DMA_REGION_SIZE)
    throw new VfioUserError(Errno.ENOSPC, `${what}: larger than ${MAX_DMA_REGION_SIZE}`);
  if (m.addr + m.size > U64_END) throw VfioUserError.invalid(`${what}: wraps around`);
  const fd = ctx.fds.takeOne();
  await ctx.endpoint.dmaMap(
    fd === undefined
      ? { flags: m.flags, offset: m.offset, addr: m.addr, size: m.size }
      : { flags: m.flags, offset: m.offset, addr: m.addr, size: m.size, fd },
  );
  return { reply: encodeDmaMapReply(ctx.header.id) };
}

async function handleDmaUnmap(ctx: RequestContext): Promise<HandlerResult> {
  const m = decodeDmaUnmapRequest(ctx.message);
  const what = `DMA_UNMAP 0x${m.addr.toString(16)}+0x${m.size.toString(16)} flags 0x${m.flags.toString(16)}`;
  if (m.argsz < DMA_UNMAP_SIZE || m.argsz > Limits.MAX_DATA_XFER_SIZE)
    throw VfioUserError.invalid(`${what}: argsz ${m.argsz}`);
  if (m.flags !== 0 && m.flags !== DmaUnmapFlag.ALL && m.flags !== DmaUnmapFlag.GET_DIRTY_BITMAP) {
    throw VfioUserError.invalid(`${what}: bad flags`);
  }
  if (m.flags === DmaUnmapFlag.GET_DIRTY_BITMAP)
    throw VfioUserError.invalid(`${what}: dirty page tracking is not supported`);
  const all = m.flags === DmaUnmapFlag.ALL;
  if (all && (m.addr !== 0n || m.size !== 0n)) throw VfioUserError.invalid(`${what}: ALL needs addr = size = 0`);
  await ctx.endpoint.dmaUnmap(m.addr, m.size, all);
  // The struct as received (libvfio-user copies the request).
  return { reply: encodeDmaUnmapReply(ctx.header.id, { argsz: m.argsz, flags: m.flags, addr: m.addr, size: m.size }) };
}

export const dmaHandlers = {
  [VfioUserCommand.DMA_MAP]: handleDmaMap,
  [VfioUserCommand.DMA_UNMAP]: handleDmaUnmap,
} as const;
