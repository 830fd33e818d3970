/**
 * Regions: DEVICE_GET_REGION_INFO (asked like QEMU), DEVICE_GET_REGION_IO_FDS,
 * and REGION_READ / REGION_WRITE with the checks QEMU makes on their replies.
 */
import { native } from '../native/index.js';
import { VfioUserCommand } from '../protocol/constants.js';
import {
  REGION_INFO_SIZE,
  decodeRegionInfoReply,
  decodeRegionIoFdsReply,
  encodeRegionInfoRequest,
  encodeRegionIoFdsRequest,
  type RegionInfoReply,
  type RegionIoFdsReply,
} from '../protocol/regions.js';
import { decodeRegionReadReply, encodeRegionReadRequest, encodeRegionWriteRequest } from '../protocol/region-access.js';
import { closeFds, protocolError, type RequestChannel } from './request-channel.js';

/** GET_REGION_INFO result, with the fd the server sent (owned by the caller: close it). */
export interface RegionInfoWithFd extends RegionInfoReply {
  fd?: number;
}

/** VfioUserClient.getRegionInfo: with argsz 32, then again with the reply's argsz if the capability chain did not fit. */
export async function getRegionInfo(ch: RequestChannel, index: number, argsz?: number): Promise<RegionInfoWithFd> {
  const ask = async (a: number): Promise<RegionInfoWithFd> => {
    const r = await ch.typed(VfioUserCommand.DEVICE_GET_REGION_INFO, (id) => encodeRegionInfoRequest(id, index, a));
    if (r.fds.length > 1) {
      closeFds(r.fds);
      throw protocolError(VfioUserCommand.DEVICE_GET_REGION_INFO, `${r.fds.length} fds with region info`);
    }
    let info: RegionInfoReply;
    try {
      info = decodeRegionInfoReply(r.message);
    } catch (err) {
      closeFds(r.fds);
      throw err;
    }
    const [fd] = r.fds;
    return fd !== undefined ? { ...info, fd } : info;
  };
  if (argsz !== undefined) return ask(argsz);
  const first = await ask(REGION_INFO_SIZE);
  if (first.argsz <= REGION_INFO_SIZE) return first;
  if (first.fd !== undefined) native.closeFd(first.fd);
  return ask(first.argsz);
}

/** VfioUserClient.getRegionIoFds: the fds belong to the caller. */
export async function getRegionIoFds(
  ch: RequestChannel,
  index: number,
  argsz: number,
): Promise<RegionIoFdsReply & { fds: number[] }> {
  const r = await ch.typed(VfioUserCommand.DEVICE_GET_REGION_IO_FDS, (id) =>
    encodeRegionIoFdsRequest(id, index, argsz),
  );
  try {
    return { ...decodeRegionIoFdsReply(r.message), fds: r.fds };
  } catch (err) {
    closeFds(r.fds);
    throw err;
  }
}

/** VfioUserClient.regionRead: the reply must echo the access and carry exactly `count` bytes. */
export async function regionRead(
  ch: RequestChannel,
  index: number,
  offset: bigint | number,
  count: number,
): Promise<Uint8Array> {
  const off = BigInt(offset);
  const r = await ch.typed(VfioUserCommand.REGION_READ, (id) =>
    encodeRegionReadRequest(id, { offset: off, region: index, count }),
  );
  closeFds(r.fds);
  const reply = decodeRegionReadReply(r.message);
  if (reply.offset !== off || reply.region !== index || reply.count !== count) {
    throw protocolError(
      VfioUserCommand.REGION_READ,
      `REGION_READ reply (${reply.region}@${reply.offset}+${reply.count}) does not match the request`,
    );
  }
  // a plain Uint8Array view (not a Buffer) over the reply's bytes
  return new Uint8Array(reply.data.buffer, reply.data.byteOffset, reply.data.byteLength);
}

/** VfioUserClient.regionWrite: `posted` sets NO_REPLY (resolves once queued; errors are never reported). */
export async function regionWrite(
  ch: RequestChannel,
  index: number,
  offset: bigint | number,
  data: Uint8Array,
  posted: boolean,
): Promise<void> {
  const off = BigInt(offset);
  if (posted) {
    ch.send(encodeRegionWriteRequest(ch.allocId(), off, index, data, true));
    return;
  }
  const r = await ch.typed(VfioUserCommand.REGION_WRITE, (id) => encodeRegionWriteRequest(id, off, index, data));
  closeFds(r.fds);
}
