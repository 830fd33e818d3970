/**
 * The client's side of DMA: DMA_MAP / DMA_UNMAP of guest memory (a memfd that
 * goes along with the map, or plain bytes), and the answers to the server's
 * DMA_READ / DMA_WRITE requests from the mapped ranges (DmaMapTable).
 */
import type { Logger } from 'pino';
import { VfioUserCommand, DmaMapFlag, DmaUnmapFlag, Errno, commandName } from '../protocol/constants.js';
import { encodeErrorReply, wantsReply, type MessageHeader } from '../protocol/header.js';
import {
  decodeDmaUnmapReply,
  encodeDmaMapRequest,
  encodeDmaUnmapRequest,
  type DmaUnmapMessage,
} from '../protocol/dma.js';
import {
  decodeDmaReadRequest,
  decodeDmaWriteRequest,
  encodeDmaReadReply,
  encodeDmaWriteReply,
} from '../protocol/dma-access.js';
import { VfioUserClientError } from './errors.js';
import type { DmaMapTable, DmaMapEntry } from './dma-map-table.js';
import type { GuestBacking } from './guest-memory.js';
import { closeFds, type RequestChannel } from './request-channel.js';

export interface DmaMapOptions {
  /** Guest address of the range. */
  addr: bigint;
  /** Bytes (default: the whole backing from `offset`). */
  size?: bigint;
  /** The memory behind the range: GuestMemory (memfd), or any bytes. Default: fresh zeroed bytes of `size`. */
  backing?: GuestBacking | Uint8Array;
  /** Offset into the backing (and into its fd). */
  offset?: number;
  /** DmaMapFlag bits (default READ|WRITE). */
  flags?: number;
  /** Send the backing's fd (default: when it has one). false makes the server use DMA_READ/DMA_WRITE. */
  shareFd?: boolean;
}

/** Server->client requests the client served or refused (VfioUserClient.served). */
export interface ServedRequests {
  dmaRead: number;
  dmaWrite: number;
  refused: number;
}

/** VfioUserClient.dmaMap: the range enters `table` first (so DMA_READ/WRITE can be answered at once) and leaves it if the map fails. */
export async function dmaMap(ch: RequestChannel, table: DmaMapTable, o: DmaMapOptions): Promise<DmaMapEntry> {
  const offset = o.offset ?? 0;
  const raw = o.backing instanceof Uint8Array ? o.backing : o.backing?.bytes;
  const fd = o.backing instanceof Uint8Array ? undefined : o.backing?.fd;
  const size = o.size ?? (raw ? BigInt(raw.byteLength - offset) : undefined);
  if (size === undefined) throw new RangeError('dmaMap: size or backing required');
  const bytes = raw ? raw.subarray(offset, offset + Number(size)) : new Uint8Array(Number(size));
  if (BigInt(bytes.byteLength) !== size) throw new RangeError('dmaMap: range exceeds its backing');
  const flags = o.flags ?? DmaMapFlag.READ | DmaMapFlag.WRITE;
  const share = (o.shareFd ?? true) && fd !== undefined;
  const range: DmaMapEntry = { addr: o.addr, size, bytes, flags, shared: share };
  table.add(range);
  try {
    const r = await ch.typed(
      VfioUserCommand.DMA_MAP,
      (id) => encodeDmaMapRequest(id, { flags, offset: share ? BigInt(offset) : 0n, addr: o.addr, size }),
      share ? [fd] : [],
    );
    closeFds(r.fds);
  } catch (err) {
    table.remove(o.addr, size);
    throw err;
  }
  return range;
}

/** VfioUserClient.dmaUnmap: resolves with the echoed struct; the range (or, with ALL, every range) leaves `table`. */
export async function dmaUnmap(
  ch: RequestChannel,
  table: DmaMapTable,
  addr: bigint,
  size: bigint,
  flags: number,
): Promise<DmaUnmapMessage> {
  const r = await ch.typed(VfioUserCommand.DMA_UNMAP, (id) => encodeDmaUnmapRequest(id, { flags, addr, size }));
  closeFds(r.fds);
  if (flags & DmaUnmapFlag.ALL) table.clear();
  else table.remove(addr, size);
  return decodeDmaUnmapReply(r.message);
}

/** What answering the server's requests needs. */
export interface DmaRequestContext {
  table: DmaMapTable;
  served: ServedRequests;
  /** Our max_data_xfer_size: larger DMA_READ/DMA_WRITE are refused (E2BIG). */
  maxDataXferSize: number;
  log: Logger;
}

/**
 * Answer a server->client request from the mapped ranges: DMA_READ/DMA_WRITE
 * are served; fds (closed), unknown commands (ENOSYS), unmapped addresses
 * (EFAULT), read-only ranges (EPERM) and oversize transfers (E2BIG) get an
 * error reply. A request with NO_REPLY gets no answer.
 */
export function serveDmaRequest(
  ch: RequestChannel,
  ctx: DmaRequestContext,
  header: MessageHeader,
  message: Buffer,
  fds: number[],
): void {
  let reply: Uint8Array;
  try {
    if (fds.length > 0) throw new VfioUserClientError(Errno.EINVAL, header.command, 'fds on a server request');
    if (header.command === VfioUserCommand.DMA_READ) {
      const req = decodeDmaReadRequest(message);
      if (req.count > BigInt(ctx.maxDataXferSize))
        throw new VfioUserClientError(Errno.E2BIG, header.command, 'DMA_READ larger than max_data_xfer_size');
      const data = ctx.table.read(req.addr, Number(req.count));
      reply = encodeDmaReadReply(header.id, req.addr, data);
      ctx.served.dmaRead++;
    } else if (header.command === VfioUserCommand.DMA_WRITE) {
      const req = decodeDmaWriteRequest(message);
      if (req.count > BigInt(ctx.maxDataXferSize))
        throw new VfioUserClientError(Errno.E2BIG, header.command, 'DMA_WRITE larger than max_data_xfer_size');
      ctx.table.write(req.addr, req.data);
      reply = encodeDmaWriteReply(header.id, req.addr, Number(req.count));
      ctx.served.dmaWrite++;
    } else {
      throw new VfioUserClientError(Errno.ENOSYS, header.command, `server sent ${commandName(header.command)}`);
    }
  } catch (err) {
    closeFds(fds);
    ctx.served.refused++;
    const errno = (err as { errno?: number }).errno ?? Errno.EINVAL;
    ctx.log.debug({ id: header.id, cmd: commandName(header.command), errno }, 'refused server request');
    reply = encodeErrorReply(header.id, header.command, errno);
  }
  if (!wantsReply(header)) return;
  try {
    ch.send(reply);
  } catch {
    // connection gone: the channel's close handling cleans up
  }
}
