/**
 * PRP (Physical Region Page) data pointers: turn PRP1/PRP2 (and PRP lists,
 * chained through their last entry) into guest address segments, and move
 * bytes between those segments and a host buffer.
 *
 * Everything the guest wrote here is hostile: misaligned entries are Invalid
 * PRP Offset, addresses no DMA map covers are Data Transfer Errors.
 */
import { PAGE_SIZE, Status } from './constants.js';
import { NvmeStatusError, type DmaAccess, type NvmeDma } from './host.js';

/** A run of guest-physical bytes. */
export interface Segment {
  addr: bigint;
  length: number;
}

const PAGE = BigInt(PAGE_SIZE);
const PAGE_MASK = PAGE - 1n;
const ENTRIES_PER_PAGE = PAGE_SIZE / 8;

function pushSegment(out: Segment[], addr: bigint, length: number): void {
  const last = out[out.length - 1];
  if (last && last.addr + BigInt(last.length) === addr) last.length += length;
  else out.push({ addr, length });
}

/** A PRP entry (two dwords) in hex, for messages. */
function hexEntry(hi: number, lo: number): string {
  return ((BigInt(hi) << 32n) | BigInt(lo)).toString(16);
}

/** A PRP list read the walker needs: `count` 8-byte entries at `addr`. */
interface ListRequest {
  addr: bigint;
  count: number;
}

function listError(addr: bigint, err: unknown): NvmeStatusError {
  return new NvmeStatusError(
    Status.DATA_TRANSFER_ERROR,
    `PRP list at 0x${addr.toString(16)} unreadable: ${(err as Error).message}`,
  );
}

/**
 * The PRP walk itself, independent of how list pages are read: it yields
 * each list read it needs and is resumed with the entries (every entry is
 * read exactly once, so a guest changing the list meanwhile cannot make two
 * reads disagree). Returns the segments, contiguous pages merged.
 */
function* walkPrps(prp1: bigint, prp2: bigint, length: number): Generator<ListRequest, Segment[], DataView> {
  const out: Segment[] = [];
  if (length === 0) return out;
  if ((prp1 & 3n) !== 0n) throw new NvmeStatusError(Status.INVALID_PRP_OFFSET, 'PRP1 not dword aligned');
  const first = Math.min(length, PAGE_SIZE - Number(prp1 & PAGE_MASK));
  pushSegment(out, prp1, first);
  let left = length - first;
  if (left === 0) return out;
  if (left <= PAGE_SIZE) {
    if ((prp2 & PAGE_MASK) !== 0n)
      throw new NvmeStatusError(Status.INVALID_PRP_OFFSET, 'PRP2 data pointer not page aligned');
    pushSegment(out, prp2, left);
    return out;
  }
  // PRP2 points to a list (it may start mid-page; its last entry chains to the next page).
  let list = prp2;
  if ((list & 7n) !== 0n) throw new NvmeStatusError(Status.INVALID_PRP_OFFSET, 'PRP list pointer not qword aligned');
  let pages = 0;
  while (left > 0) {
    const inPage = ENTRIES_PER_PAGE - Number((list & PAGE_MASK) / 8n);
    const needed = Math.ceil(left / PAGE_SIZE);
    const count = needed <= inPage ? needed : inPage;
    const entries = yield { addr: list, count };
    const dataEntries = needed <= inPage ? count : count - 1;
    // Entries are read as two dwords and merged in Number space (a BigInt per
    // entry is the slow part of a 1 MiB command's walk); only a new segment
    // start becomes a BigInt.
    let runStart = -1;
    let runLength = 0;
    for (let i = 0; i < dataEntries; i++) {
      const lo = entries.getUint32(i * 8, true);
      const hi = entries.getUint32(i * 8 + 4, true);
      if ((lo & (PAGE_SIZE - 1)) !== 0)
        throw new NvmeStatusError(
          Status.INVALID_PRP_OFFSET,
          `PRP entry ${hexEntry(hi, lo)} at ${list.toString(16)}+${i} not page aligned`,
        );
      if (hi >= 0x20_0000)
        throw new NvmeStatusError(
          Status.DATA_TRANSFER_ERROR,
          `PRP entry ${hexEntry(hi, lo)} is beyond any guest memory`,
        );
      const addr = hi * 0x1_0000_0000 + lo;
      const len = left < PAGE_SIZE ? left : PAGE_SIZE;
      if (runStart >= 0 && runStart + runLength === addr) {
        runLength += len;
      } else {
        if (runStart >= 0) pushSegment(out, BigInt(runStart), runLength);
        runStart = addr;
        runLength = len;
      }
      left -= len;
    }
    if (runStart >= 0) pushSegment(out, BigInt(runStart), runLength);
    if (left > 0) {
      list = entries.getBigUint64((count - 1) * 8, true);
      if ((list & 7n) !== 0n)
        throw new NvmeStatusError(Status.INVALID_PRP_OFFSET, 'chained PRP list not qword aligned');
      // A guest could build a list that loops forever: bounded by `left`, which shrinks every page.
      if (++pages > length / PAGE_SIZE + 2) throw new NvmeStatusError(Status.DATA_TRANSFER_ERROR, 'PRP list too long');
    }
  }
  return out;
}

/** The data fits in PRP1's page (the common 4 KiB case): no walk, no list. */
function singlePage(prp1: bigint, length: number): boolean {
  return length > 0 && (prp1 & 3n) === 0n && length <= PAGE_SIZE - Number(prp1 & PAGE_MASK);
}

/**
 * The segments PRP1/PRP2 describe for a transfer of `length` bytes
 * (contiguous pages merged). Resolves without reading guest memory when no
 * PRP list is needed.
 */
export function prpSegments(dma: NvmeDma, prp1: bigint, prp2: bigint, length: number): Promise<Segment[]> {
  if (singlePage(prp1, length)) return Promise.resolve([{ addr: prp1, length }]);
  let inPlace: Segment[] | undefined;
  try {
    inPlace = prpSegmentsSync(dma, prp1, prp2, length);
  } catch (err) {
    return Promise.reject(err);
  }
  // Lists in fd-backed memory were read in place; otherwise read them by message.
  return inPlace ? Promise.resolve(inPlace) : prpSegmentsAsync(dma, prp1, prp2, length);
}

async function prpSegmentsAsync(dma: NvmeDma, prp1: bigint, prp2: bigint, length: number): Promise<Segment[]> {
  const walk = walkPrps(prp1, prp2, length);
  let step = walk.next();
  while (!step.done) {
    const { addr, count } = step.value;
    let entries: DataView;
    try {
      const view = dma.view(addr, count * 8, 'read');
      const bytes = view ?? (await dma.read(addr, count * 8));
      entries = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (err) {
      throw listError(addr, err);
    }
    step = walk.next(entries);
  }
  return step.value;
}

/**
 * prpSegments without waiting: the segments when every PRP list page lies in
 * fd-backed guest memory (read in place), undefined when a list must be read
 * by message (then use prpSegments). Throws NvmeStatusError like prpSegments.
 */
export function prpSegmentsSync(dma: NvmeDma, prp1: bigint, prp2: bigint, length: number): Segment[] | undefined {
  if (singlePage(prp1, length)) return [{ addr: prp1, length }];
  const walk = walkPrps(prp1, prp2, length);
  let step = walk.next();
  while (!step.done) {
    const { addr, count } = step.value;
    let view: Uint8Array | undefined;
    try {
      view = dma.view(addr, count * 8, 'read');
    } catch (err) {
      throw listError(addr, err);
    }
    if (!view) return undefined;
    step = walk.next(new DataView(view.buffer, view.byteOffset, view.byteLength));
  }
  return step.value;
}

function transferError(seg: Segment, err: unknown): NvmeStatusError {
  return new NvmeStatusError(
    Status.DATA_TRANSFER_ERROR,
    `DMA to 0x${seg.addr.toString(16)}+${seg.length} failed: ${(err as Error).message}`,
  );
}

/** The segment's bytes in mapped guest memory, undefined for message-only memory; Data Transfer Error when unmapped. */
function directView(dma: NvmeDma, seg: Segment, access: DmaAccess): Uint8Array | undefined {
  try {
    return dma.view(seg.addr, seg.length, access);
  } catch (err) {
    throw transferError(seg, err);
  }
}

/** Copy `src` into the segments (in order). Data Transfer Error when guest memory is not there. */
export async function copyToGuest(dma: NvmeDma, segments: readonly Segment[], src: Uint8Array): Promise<void> {
  let pos = 0;
  for (const seg of segments) {
    const chunk = src.subarray(pos, pos + seg.length);
    pos += seg.length;
    const view = directView(dma, seg, 'readwrite');
    if (view) {
      view.set(chunk);
      dma.markDirty?.(seg.addr, seg.length);
      continue;
    }
    try {
      await dma.write(seg.addr, chunk);
    } catch (err) {
      throw transferError(seg, err);
    }
  }
}

/** Copy the segments' bytes into `dst` (in order). */
export async function copyFromGuest(dma: NvmeDma, segments: readonly Segment[], dst: Uint8Array): Promise<void> {
  let pos = 0;
  for (const seg of segments) {
    const view = directView(dma, seg, 'read');
    if (view) {
      dst.set(view, pos);
    } else {
      let bytes: Uint8Array;
      try {
        bytes = await dma.read(seg.addr, seg.length);
      } catch (err) {
        throw transferError(seg, err);
      }
      if (bytes.length !== seg.length) throw transferError(seg, new Error('short DMA read'));
      dst.set(bytes, pos);
    }
    pos += seg.length;
  }
}
