/** REGION_READ, REGION_WRITE, REGION_WRITE_MULTI: validated as libvfio-user does (all EINVAL). */
import { VfioUserError } from '../../protocol/errors.js';
import type { Endpoint } from '../endpoint.js';
import {
  VfioUserCommand, HEADER_SIZE, RegionFlag, decodeRegionReadRequest, decodeRegionWriteMultiRequest, decodeRegionWriteRequest,
  encodeRegionReadReply, encodeRegionWriteMultiReply, encodeRegionWriteReply, readU32, readU64, wantsReply,
} from '../../protocol/index.js';
import type { HandlerResult, RequestContext } from './context.js';

const EMPTY = new Uint8Array(0);

/** Check region index, count limit, direction flag and offset+count <= size. */
export function checkRegionAccess(endpoint: Endpoint, region: number, offset: bigint, count: number, maxDataXferSize: number, write: boolean): void {
  if (region >= endpoint.numRegions) throw VfioUserError.invalid(`region ${region} >= num_regions ${endpoint.numRegions}`);
  if (count > maxDataXferSize) throw VfioUserError.invalid(`count ${count} > max_data_xfer_size ${maxDataXferSize}`);
  const info = endpoint.regionInfo(region);
  if (offset + BigInt(count) > info.size) {
    throw VfioUserError.invalid(`region ${region}: access 0x${offset.toString(16)}+${count} past its size 0x${info.size.toString(16)}`);
  }
  const need = write ? RegionFlag.WRITE : RegionFlag.READ;
  if (count > 0 && !(info.flags & need)) throw VfioUserError.invalid(`region ${region} is not ${write ? 'writable' : 'readable'}`);
}

function finishRead(ctx: RequestContext, offset: bigint, region: number, count: number, data: Uint8Array): HandlerResult {
  if (data.byteLength !== count) {
    throw VfioUserError.invalid(`region ${region}: device returned ${data.byteLength} bytes for a ${count}-byte read`);
  }
  return { reply: encodeRegionReadReply(ctx.header.id, offset, region, data) };
}

export function handleRegionRead(ctx: RequestContext): HandlerResult | Promise<HandlerResult> {
  const { offset, region, count } = decodeRegionReadRequest(ctx.message);
  checkRegionAccess(ctx.endpoint, region, offset, count, ctx.maxDataXferSize, false);
  if (count === 0) return { reply: encodeRegionReadReply(ctx.header.id, offset, region, EMPTY) };
  const data = ctx.endpoint.regionRead(region, offset, count);
  if (data instanceof Promise) return data.then((d) => finishRead(ctx, offset, region, count, d));
  return finishRead(ctx, offset, region, count, data);
}

/** Register-sized writes are copied into a small heap array: cheaper than any view of the message's off-heap bytes. */
const SMALL_WRITE = 8;

/** The data bytes of a REGION_WRITE (`count` bytes after the 32-byte request). */
function writeData(msg: Uint8Array, count: number): Uint8Array {
  if (count <= SMALL_WRITE) {
    const data = new Uint8Array(count);
    for (let i = 0; i < count; i++) data[i] = msg[HEADER_SIZE + 16 + i]!;
    return data;
  }
  // No copy: the native layer hands over a fresh buffer per message, never reused.
  return msg.subarray(HEADER_SIZE + 16);
}

/** The result of a request whose reply is suppressed (NO_REPLY): nothing is encoded or sent. */
const NO_REPLY_RESULT: HandlerResult = { reply: EMPTY };

function writeResult(ctx: RequestContext, offset: bigint, region: number, count: number): HandlerResult {
  if (!wantsReply(ctx.header)) return NO_REPLY_RESULT;
  return { reply: encodeRegionWriteReply(ctx.header.id, { offset, region, count }) };
}

/**
 * The hot path of a posted BAR write (an NVMe doorbell): decoded in place, no
 * closure, no Buffer.subarray, and no reply encoded when NO_REPLY is set.
 */
export function handleRegionWrite(ctx: RequestContext): HandlerResult | Promise<HandlerResult> {
  const msg = ctx.message;
  if (msg.byteLength < HEADER_SIZE + 16) decodeRegionWriteRequest(msg); // throws its EINVAL
  const offset = readU64(msg, 16);
  const region = readU32(msg, 24);
  const count = readU32(msg, 28);
  const length = msg.byteLength - (HEADER_SIZE + 16);
  if (length !== count) throw VfioUserError.invalid(`REGION_WRITE: count ${count} but ${length} data bytes`);
  checkRegionAccess(ctx.endpoint, region, offset, count, ctx.maxDataXferSize, true);
  if (count === 0) return writeResult(ctx, offset, region, count);
  const data = writeData(msg, count);
  const done = ctx.endpoint.regionWrite(region, offset, data);
  if (done instanceof Promise) return done.then(() => writeResult(ctx, offset, region, count));
  return writeResult(ctx, offset, region, count);
}

/** Every write is validated before any runs; they then run in order. */
export async function handleRegionWriteMulti(ctx: RequestContext): Promise<HandlerResult> {
  const writes = decodeRegionWriteMultiRequest(ctx.message);
  for (const w of writes) checkRegionAccess(ctx.endpoint, w.region, w.offset, w.count, ctx.maxDataXferSize, true);
  for (const w of writes) {
    const done = ctx.endpoint.regionWrite(w.region, w.offset, w.data);
    if (done instanceof Promise) await done;
  }
  return { reply: encodeRegionWriteMultiReply(ctx.header.id, writes.length) };
}

export const regionHandlers = {
  [VfioUserCommand.REGION_READ]: handleRegionRead,
  [VfioUserCommand.REGION_WRITE]: handleRegionWrite,
  [VfioUserCommand.REGION_WRITE_MULTI]: handleRegionWriteMulti,
} as const;
