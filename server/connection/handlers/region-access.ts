/**
 * REGION_READ, REGION_WRITE, REGION_WRITE_MULTI, validated as libvfio-user
 * does (all EINVAL). The range checks live here and only here: the endpoint
 * gets accesses that are inside the region and in a direction it allows.
 */
import { VfioUserError } from '../../../protocol/errors.js';
import type { Endpoint } from '../../endpoint.js';
import {
  RegionFlag,
  VfioUserCommand,
  decodeRegionReadRequest,
  decodeRegionWriteMultiRequest,
  decodeRegionWriteRequest,
  encodeRegionReadReply,
  encodeRegionWriteMultiReply,
  encodeRegionWriteReply,
  wantsReply,
} from '../../../protocol/index.js';
import type { HandlerResult, RequestContext } from '../context.js';

const EMPTY = new Uint8Array(0);

/** Check region index, count limit, direction flag and offset+count <= size. */
function checkRegionAccess(
  endpoint: Endpoint,
  region: number,
  offset: bigint,
  count: number,
  maxDataXferSize: number,
  write: boolean,
): void {
  if (region >= endpoint.numRegions)
    throw VfioUserError.invalid(`region ${region} >= num_regions ${endpoint.numRegions}`);
  if (count > maxDataXferSize) throw VfioUserError.invalid(`count ${count} > max_data_xfer_size ${maxDataXferSize}`);
  const info = endpoint.regionInfo(region);
  if (offset + BigInt(count) > info.size) {
    throw VfioUserError.invalid(
      `region ${region}: access 0x${offset.toString(16)}+${count} past its size 0x${info.size.toString(16)}`,
    );
  }
  const need = write ? RegionFlag.WRITE : RegionFlag.READ;
  if (count > 0 && !(info.flags & need))
    throw VfioUserError.invalid(`region ${region} is not ${write ? 'writable' : 'readable'}`);
}

function finishRead(
  ctx: RequestContext,
  offset: bigint,
  region: number,
  count: number,
  data: Uint8Array,
): HandlerResult {
  if (data.byteLength !== count) {
    throw VfioUserError.invalid(`region ${region}: device returned ${data.byteLength} bytes for a ${count}-byte read`);
  }
  return { reply: encodeRegionReadReply(ctx.header.id, offset, region, data) };
}

function handleRegionRead(ctx: RequestContext): HandlerResult | Promise<HandlerResult> {
  const { offset, region, count } = decodeRegionReadRequest(ctx.message);
  checkRegionAccess(ctx.endpoint, region, offset, count, ctx.maxDataXferSize, false);
  if (count === 0) return { reply: encodeRegionReadReply(ctx.header.id, offset, region, EMPTY) };
  const data = ctx.endpoint.regionRead(region, offset, count);
  if (data instanceof Promise) return data.then((d) => finishRead(ctx, offset, region, count, d));
  return finishRead(ctx, offset, region, count, data);
}

/** The result of a request whose reply is suppressed (NO_REPLY): nothing is encoded or sent. */
const NO_REPLY_RESULT: HandlerResult = { reply: EMPTY };

function writeResult(ctx: RequestContext, offset: bigint, region: number, count: number): HandlerResult {
  if (!wantsReply(ctx.header)) return NO_REPLY_RESULT;
  return { reply: encodeRegionWriteReply(ctx.header.id, { offset, region, count }) };
}

/**
 * The hot path of a posted BAR write (an NVMe doorbell): no closure, the
 * decoded fields destructured at once (so V8 allocates no object for them),
 * and no reply encoded when NO_REPLY is set. Data larger than
 * a register is a view of the message, not a copy: the native layer hands
 * over a fresh buffer per message and never reuses it.
 */
function handleRegionWrite(ctx: RequestContext): HandlerResult | Promise<HandlerResult> {
  const { offset, region, count, data } = decodeRegionWriteRequest(ctx.message);
  checkRegionAccess(ctx.endpoint, region, offset, count, ctx.maxDataXferSize, true);
  if (count === 0) return writeResult(ctx, offset, region, count);
  const done = ctx.endpoint.regionWrite(region, offset, data);
  if (done instanceof Promise) return done.then(() => writeResult(ctx, offset, region, count));
  return writeResult(ctx, offset, region, count);
}

/** Every write is validated before any runs; they then run in order. */
async function handleRegionWriteMulti(ctx: RequestContext): Promise<HandlerResult> {
  const writes = decodeRegionWriteMultiRequest(ctx.message);
  for (const w of writes) checkRegionAccess(ctx.endpoint, w.region, w.offset, w.count, ctx.maxDataXferSize, true);
  for (const w of writes) {
    const done = ctx.endpoint.regionWrite(w.region, w.offset, w.data);
    if (done instanceof Promise) await done;
  }
  return { reply: encodeRegionWriteMultiReply(ctx.header.id, writes.length) };
}

export const regionAccessHandlers = {
  [VfioUserCommand.REGION_READ]: handleRegionRead,
  [VfioUserCommand.REGION_WRITE]: handleRegionWrite,
  [VfioUserCommand.REGION_WRITE_MULTI]: handleRegionWriteMulti,
} as const;
