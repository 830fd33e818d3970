/** DEVICE_GET_REGION_INFO and DEVICE_GET_REGION_IO_FDS: validated with libvfio-user's errno. */
import { VfioUserError } from '../../../protocol/errors.js';
import type { RegionDescription } from '../../endpoint.js';
import {
  Limits,
  REGION_INFO_SIZE,
  REGION_IO_FDS_SIZE,
  RegionCap,
  RegionFlag,
  VfioUserCommand,
  decodeRegionInfoRequest,
  decodeRegionIoFdsRequest,
  encodeRegionInfoReply,
  encodeRegionIoFdsReply,
  type RegionCapability,
} from '../../../protocol/index.js';
import type { HandlerResult, RequestContext } from '../context.js';

/** The capability chain for a region: SPARSE_MMAP for an mmappable region with an fd (whole region by default), TYPE when set. */
function regionCapabilities(info: RegionDescription): RegionCapability[] {
  const caps: RegionCapability[] = [];
  if (info.flags & RegionFlag.MMAP && info.fd !== undefined) {
    const areas = info.sparseAreas ?? [{ offset: 0n, size: info.size }];
    caps.push({ id: RegionCap.SPARSE_MMAP, areas: areas.map((a) => ({ offset: a.offset, size: a.size })) });
  }
  if (info.regionType) caps.push({ id: RegionCap.TYPE, type: info.regionType.type, subtype: info.regionType.subtype });
  return caps;
}

function handleRegionInfo(ctx: RequestContext): HandlerResult {
  const req = decodeRegionInfoRequest(ctx.message);
  if (req.argsz < REGION_INFO_SIZE)
    throw VfioUserError.invalid(`DEVICE_GET_REGION_INFO: argsz ${req.argsz} < ${REGION_INFO_SIZE}`);
  if (req.index >= ctx.endpoint.numRegions) {
    throw VfioUserError.invalid(`DEVICE_GET_REGION_INFO: index ${req.index} >= num_regions ${ctx.endpoint.numRegions}`);
  }
  const info = ctx.endpoint.regionInfo(req.index);
  const caps = regionCapabilities(info);
  const enc = encodeRegionInfoReply(
    ctx.header.id,
    { flags: info.flags, index: req.index, size: info.size, offset: info.offset },
    caps,
    req.argsz,
  );
  // The fd rides only with a complete chain (libvfio-user; QEMU re-asks with the full argsz).
  const sendFd =
    enc.complete &&
    caps.length > 0 &&
    info.fd !== undefined &&
    (info.flags & RegionFlag.MMAP) !== 0 &&
    ctx.clientMaxMsgFds >= 1;
  return sendFd ? { reply: enc.bytes, fds: [info.fd!] } : { reply: enc.bytes };
}

/** We offer no ioeventfds: a valid request gets count 0. */
function handleRegionIoFds(ctx: RequestContext): HandlerResult {
  const req = decodeRegionIoFdsRequest(ctx.message);
  if (req.flags !== 0 || req.count !== 0)
    throw VfioUserError.invalid('DEVICE_GET_REGION_IO_FDS: flags and count must be 0');
  if (req.argsz < REGION_IO_FDS_SIZE || req.argsz > Limits.MAX_DATA_XFER_SIZE) {
    throw VfioUserError.invalid(`DEVICE_GET_REGION_IO_FDS: argsz ${req.argsz} out of range`);
  }
  if (req.index >= ctx.endpoint.numRegions)
    throw VfioUserError.invalid(`DEVICE_GET_REGION_IO_FDS: index ${req.index} out of range`);
  const info = ctx.endpoint.regionInfo(req.index);
  if ((info.flags & (RegionFlag.READ | RegionFlag.WRITE)) === 0 || info.size === 0n) {
    throw VfioUserError.invalid(`DEVICE_GET_REGION_IO_FDS: region ${req.index} is not present`);
  }
  return { reply: encodeRegionIoFdsReply(ctx.header.id, req.index, [], req.argsz).bytes };
}

export const regionsHandlers = {
  [VfioUserCommand.DEVICE_GET_REGION_INFO]: handleRegionInfo,
  [VfioUserCommand.DEVICE_GET_REGION_IO_FDS]: handleRegionIoFds,
} as const;
