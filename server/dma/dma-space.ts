/**
 * DmaSpace: the client's guest-physical (IO virtual) address space as built by
 * DMA_MAP / DMA_UNMAP, and the API device code uses to reach it.
 *
 * Contract with the device model (server/pci):
 *   const dma = new DmaSpace(log);          // one per device
 *   dma.attach(port);                       // Endpoint.attach(port)
 *   await dma.map(req);                     // Endpoint.dmaMap(req)   (takes the fd)
 *   await dma.unmap(addr, size, all);       // Endpoint.dmaUnmap(...) (waits for in-flight users)
 *   await dma.detach();                     // Endpoint.detach()      (unmaps all)
 *   await dma.read(gpa, n); await dma.write(gpa, bytes); dma.view(gpa, n);
 *   const p = dma.pin(ranges); try { ...p.views... } finally { p?.release(); }
 *   const h = dma.hold(gpa, n); try { ... } finally { h.release(); }
 *   dma.onMap((region) => ...); dma.onUnmap((region) => ...);
 *   await dma.quiesce();                    // before a reset: no DMA in flight (maps stay)
 *
 * fd-backed ranges are mmapped (native.mmapFd, MAP_SHARED, with the map's
 * protection) and the fd is closed right after; ranges without an fd are served
 * with DMA_READ / DMA_WRITE messages through the attached ClientPort. Overlap
 * with an existing range is EINVAL (libvfio-user), an identical re-map is
 * accepted, unmap of anything but an exact existing range is ENOENT.
 */
import { fstatSync } from 'node:fs';
import type { Logger } from 'pino';
import { native } from '../../native/index.js';
import type { ClientPort, DmaMapRequest } from '../endpoint.js';
import { DmaMapFlag, Errno, Limits } from '../../protocol/constants.js';
import { DmaError } from './errors.js';
import { DmaPin } from './pin.js';
import { DmaRegion } from './region.js';
import type { DmaRange } from './scatter-gather.js';

/** A part of [gpa, gpa+length) inside one region. */
interface Piece {
  gpa: bigint;
  length: number;
  region: DmaRegion;
}

/** A hold on a range: DMA_UNMAP of the regions it touches waits until release(). */
export interface DmaHold {
  release(): void;
}

/**
 * What a device may do with guest memory it reaches directly: 'read' it, or
 * 'readwrite' (the client mapped it readable and writable). A view of memory
 * the client mapped read-only must never be written: the page is mapped
 * read-only here too, and the write kills the process.
 */
export type DmaAccess = 'read' | 'readwrite';

/**
 * Told that the client mapped (DMA_MAP) or is unmapping (DMA_UNMAP, or its
 * disconnect) one range: the role of libvfio-user's dma_register /
 * dma_unregister callbacks. `region.addr`, `.size`, `.readable`, `.writable`
 * describe it; `region.mapping` is defined when it is fd-backed (view() and
 * pin() work on it), undefined when it is served by DMA messages.
 */
export type DmaMapListener = (region: DmaRegion) => void;

/**
 * Bytes a device moved through a DmaSpace, by path: copies to and from
 * mapped memory (read()/write()), ranges pinned for zero-copy I/O (pin(),
 * whatever the I/O then does with them), and DMA_READ/DMA_WRITE messages.
 * Accesses through view()s (an NVMe queue ring, say) are not counted.
 */
export interface DmaStats {
  mappedRead: number;
  mappedWrite: number;
  pinned: number;
  messageRead: number;
  messageWrite: number;
}

export interface DmaSpaceOptions {
  /** Most ranges at once (default 65535, what we advertise). */
  maxMaps?: number;
  /** What to do with DMA_MAP fds not sealed against shrinking (default 'map'); see UnsealedFdPolicy. */
  unsealedFds?: UnsealedFdPolicy;
}

/**
 * DMA_MAP fds not sealed against shrinking (F_SEAL_SHRINK): a client that
 * truncates such a file after mapping makes our next access to it crash the
 * whole process (SIGBUS). QEMU's memory-backend-memfd seals by default
 * (seal=on); memory-backend-file cannot be sealed.
 * - 'map': map it anyway (fast; one warning per device);
 * - 'messages': do not map it; serve the range with DMA_READ/DMA_WRITE
 *   messages (safe against any client, slower);
 * - 'refuse': answer EPERM.
 */
export type UnsealedFdPolicy = 'map' | 'messages' | 'refuse';

const PAGE = BigInt(Limits.PGSIZE);

/** Whether `region` allows `access` (both need it readable; 'readwrite' also writable). */
function allows(region: DmaRegion, access: DmaAccess): boolean {
  return region.readable && (access === 'read' || region.writable);
}

function listen(listeners: DmaMapListener[], listener: DmaMapListener): () => void {
  listeners.push(listener);
  return () => {
    const i = listeners.indexOf(listener);
    if (i >= 0) listeners.splice(i, 1);
  };
}

function checkArgs(gpa: bigint, length: number): void {
  if (typeof gpa !== 'bigint' || gpa < 0n) throw new DmaError(Errno.EINVAL, `DMA: bad address ${String(gpa)}`);
  if (!Number.isSafeInteger(length) || length < 0) throw new DmaError(Errno.EINVAL, `DMA: bad length ${length}`);
}

export class DmaSpace {
  readonly log: Logger;
  readonly #maxMaps: number;
  /** Sorted by addr, non-overlapping. */
  #regions: DmaRegion[] = [];
  #port: ClientPort | undefined;
  readonly #unsealed: UnsealedFdPolicy;
  #warnedUnsealed = false;
  readonly #mapListeners: DmaMapListener[] = [];
  readonly #unmapListeners: DmaMapListener[] = [];
  /** Listener failures so far (the first is logged as an error, the rest at debug: the client decides how often they run). */
  #listenerFailures = 0;
  /** Bytes moved, by path, since the space was created (metrics; read-only for callers). */
  readonly stats: DmaStats = { mappedRead: 0, mappedWrite: 0, pinned: 0, messageRead: 0, messageWrite: 0 };

  constructor(log: Logger, options: DmaSpaceOptions = {}) {
    this.log = log;
    this.#maxMaps = options.maxMaps ?? Limits.MAX_DMA_MAPS;
    this.#unsealed = options.unsealedFds ?? 'map';
  }

  /**
   * Whether the fd may be mapped: a regular file (or memfd) must hold the
   * whole mapped extent (else touching the rest is SIGBUS: EINVAL); one not
   * sealed against shrinking goes by the UnsealedFdPolicy. False: serve the
   * range by messages instead.
   */
  #mayMap(fd: number, end: number, what: string): boolean {
    let st;
    try {
      st = fstatSync(fd);
    } catch (err) {
      throw new DmaError(Errno.EBADF, `${what}: fstat failed: ${(err as Error).message}`);
    }
    if (!st.isFile()) return true; // devices and the like: mmap decides
    if (st.size < end) {
      throw new DmaError(
        Errno.EINVAL,
        `${what}: the fd holds ${st.size} bytes, the map needs ${end} (the rest would fault)`,
      );
    }
    const seals = native.fdSeals(fd);
    if (seals >= 0 && (seals & native.F_SEAL_SHRINK) !== 0) return true;
    if (this.#unsealed === 'refuse') {
      throw new DmaError(
        Errno.EPERM,
        `${what}: the fd is not sealed against shrinking (F_SEAL_SHRINK); unsealed DMA fds are refused`,
      );
    }
    if (!this.#warnedUnsealed) {
      this.#warnedUnsealed = true;
      if (this.#unsealed === 'messages') {
        this.log.info(
          `${what}: the client's memory fd is not sealed against shrinking: served by DMA messages, not mapped (slower, safe)`,
        );
      } else {
        this.log.warn(
          `${what}: the client's memory fd is not sealed against shrinking: a client that truncates it can crash this process (SIGBUS); QEMU's memory-backend-memfd seals by default (seal=on), or set unsealedDmaFds to 'messages'`,
        );
      }
    }
    return this.#unsealed === 'map';
  }

  /** #mayMap for a DMA_MAP request (the mmap covers whole pages from the page holding `offset`). */
  #mayMapRange(fd: number, req: DmaMapRequest, what: string): boolean {
    const end = ((req.offset + req.size + PAGE - 1n) / PAGE) * PAGE;
    return this.#mayMap(fd, Number(end), what);
  }

  /** The ranges currently mapped, in address order. */
  get regions(): readonly DmaRegion[] {
    return this.#regions;
  }

  /** The client port used for message-only ranges. */
  get port(): ClientPort | undefined {
    return this.#port;
  }

  attach(port: ClientPort): void {
    this.#port = port;
  }

  /** Unmap everything (waiting for in-flight users) and forget the port. */
  async detach(): Promise<void> {
    await this.unmap(0n, 0n, true);
    this.#port = undefined;
  }

  /** Index of the first region whose end > gpa (binary search). */
  #firstEndingAfter(gpa: bigint): number {
    let lo = 0;
    let hi = this.#regions.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#regions[mid]!.end <= gpa) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The region containing gpa, if any. */
  find(gpa: bigint): DmaRegion | undefined {
    const r = this.#regions[this.#firstEndingAfter(gpa)];
    return r && r.addr <= gpa ? r : undefined;
  }

  /**
   * DMA_MAP. Takes ownership of `req.fd` (closed after mmap, on error, and for
   * an identical re-map). EINVAL: overlap, too many maps; an mmap failure
   * carries mmap's errno (EFAULT when unknown). The range itself (size > 0,
   * no wrap-around) was checked by the connection (see Endpoint.dmaMap).
   */
  async map(req: DmaMapRequest): Promise<void> {
    let fd = req.fd;
    const closeFd = async (): Promise<void> => {
      if (fd === undefined) return;
      const f = fd;
      fd = undefined;
      try {
        native.closeFd(f);
      } catch (err) {
        this.log.warn({ err, fd: f }, 'DMA: closing a map fd failed');
      }
    };
    try {
      const { addr, size } = req;
      const what = `DMA_MAP [0x${addr.toString(16)}, +0x${size.toString(16)})`;
      const i = this.#firstEndingAfter(addr);
      const next = this.#regions[i];
      if (next && next.addr < addr + size) {
        if (
          next.addr === addr &&
          next.size === size &&
          next.offset === req.offset &&
          next.flags === req.flags &&
          (next.mapping !== undefined) === (req.fd !== undefined)
        ) {
          this.log.debug(
            { addr: `0x${addr.toString(16)}`, size: `0x${size.toString(16)}` },
            'DMA: identical re-map accepted',
          );
          return;
        }
        throw new DmaError(
          Errno.EINVAL,
          `${what}: overlaps [0x${next.addr.toString(16)}, +0x${next.size.toString(16)})`,
        );
      }
      if (this.#regions.length >= this.#maxMaps)
        throw new DmaError(Errno.EINVAL, `${what}: more than ${this.#maxMaps} maps`);
      let region: DmaRegion;
      if (fd !== undefined && this.#mayMapRange(fd, req, what)) {
        const base = req.offset - (req.offset % PAGE);
        const delta = Number(req.offset - base);
        const length = Number(((BigInt(delta) + size + PAGE - 1n) / PAGE) * PAGE);
        let prot = 0;
        if (req.flags & DmaMapFlag.READ) prot |= native.PROT_READ;
        if (req.flags & DmaMapFlag.WRITE) prot |= native.PROT_WRITE;
        if (prot === 0) prot = native.PROT_READ;
        let mapping;
        try {
          mapping = native.mmapFd(fd, Number(base), length, prot);
        } catch (err) {
          const code = (err as { code?: string }).code;
          const errno = code && code in Errno ? Errno[code as keyof typeof Errno] : Errno.EFAULT;
          throw new DmaError(errno, `${what}: mmap failed: ${(err as Error).message}`);
        }
        region = new DmaRegion(addr, size, req.flags, req.offset, mapping, delta, native.WINDOW_SIZE);
      } else {
        region = new DmaRegion(addr, size, req.flags, req.offset, undefined, 0, 0);
      }
      this.#regions.splice(i, 0, region);
      this.log.debug(
        {
          addr: `0x${addr.toString(16)}`,
          size: `0x${size.toString(16)}`,
          flags: req.flags,
          fd: region.mapping !== undefined,
        },
        'DMA: mapped',
      );
      this.#tell(this.#mapListeners, region, 'map');
    } finally {
      await closeFd();
    }
  }

  /**
   * DMA_UNMAP. `all`: every range (addr and size ignored). Otherwise the exact
   * range of one earlier map, else ENOENT. The ranges leave the lookup at once
   * and the onUnmap listeners run; resolves once no hold() or pin() remains on
   * the removed fd-backed ranges and their mappings are gone (views
   * detached). Message-only ranges do not wait.
   */
  async unmap(addr: bigint, size: bigint, all = false): Promise<void> {
    let victims: DmaRegion[];
    if (all) {
      victims = this.#regions;
      this.#regions = [];
    } else {
      const i = this.#firstEndingAfter(addr);
      const r = this.#regions[i];
      if (!r || r.addr !== addr || r.size !== size) {
        throw new DmaError(
          Errno.ENOENT,
          `DMA_UNMAP [0x${addr.toString(16)}, +0x${size.toString(16)}): no such mapping`,
        );
      }
      this.#regions.splice(i, 1);
      victims = [r];
    }
    for (const r of victims) r.removed = true;
    for (const r of victims) this.#tell(this.#unmapListeners, r, 'unmap');
    // Only mmapped memory needs its users gone first; a message-only range has
    // nothing to protect (and waiting could deadlock on the client).
    await Promise.all(
      victims.map(async (r) => {
        if (!r.mapping) return;
        await r.drained();
        r.mapping.unmap();
      }),
    );
    if (victims.length > 0) this.log.debug({ count: victims.length, all }, 'DMA: unmapped');
  }

  /**
   * Resolves when no hold() remains on any region (for a device reset that
   * must quiesce DMA but keep the maps, as DEVICE_RESET does).
   */
  async quiesce(): Promise<void> {
    await Promise.all(this.#regions.map((r) => r.drained()));
  }

  /**
   * Call `listener` after each DMA_MAP added a range (not for an identical
   * re-map). Returns a function that removes the listener. A listener that
   * throws is logged; the map stands.
   */
  onMap(listener: DmaMapListener): () => void {
    return listen(this.#mapListeners, listener);
  }

  /**
   * Call `listener` for each range a DMA_UNMAP (or the client's disconnect)
   * removes, right after it left the lookup (pin(), hold(), view() no longer
   * find it) and before the unmap waits for the pins and holds on it: release
   * them here, or finish the I/O that uses them (the unmap, and the client's
   * reply, wait until they are released). Returns a function that removes
   * the listener.
   */
  onUnmap(listener: DmaMapListener): () => void {
    return listen(this.#unmapListeners, listener);
  }

  #tell(listeners: readonly DmaMapListener[], region: DmaRegion, what: 'map' | 'unmap'): void {
    if (listeners.length === 0) return;
    for (const listener of listeners.slice()) {
      try {
        listener(region);
      } catch (err) {
        const first = ++this.#listenerFailures === 1;
        this.log[first ? 'error' : 'debug'](
          { err, addr: `0x${region.addr.toString(16)}`, failures: this.#listenerFailures },
          `DMA: an on${what === 'map' ? 'Map' : 'Unmap'} listener threw`,
        );
      }
    }
  }

  /** Split [gpa, gpa+length) into per-region pieces. DmaError EFAULT when any byte is unmapped. */
  #pieces(gpa: bigint, length: number): Piece[] {
    checkArgs(gpa, length);
    const out: Piece[] = [];
    if (length === 0) return out;
    const end = gpa + BigInt(length);
    let at = gpa;
    let i = this.#firstEndingAfter(gpa);
    while (at < end) {
      const r = this.#regions[i++];
      if (!r || r.addr > at) throw DmaError.unmapped(gpa, length);
      const stop = r.end < end ? r.end : end;
      out.push({ gpa: at, length: Number(stop - at), region: r });
      at = stop;
    }
    return out;
  }

  /**
   * Hold every region under [gpa, gpa+length) so that DMA_UNMAP of an
   * fd-backed one waits for release() (use it around work on view()s that
   * spans an await; pin() gives the views and the hold in one). DmaError
   * EFAULT when unmapped.
   */
  hold(gpa: bigint, length: number): DmaHold {
    const segs = this.#pieces(gpa, length);
    for (const s of segs) s.region.acquire();
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        for (const s of segs) s.region.release();
      },
    };
  }

  /**
   * Pin guest memory for direct, zero-copy access (the role of libvfio-user's
   * vfu_addr_to_sgl + vfu_sgl_get / vfu_sgl_put): one view per range, in
   * order, mapped until `release()`. A DMA_UNMAP of any region under them
   * waits until then, so the views may be handed to I/O that completes later
   * (a file read on the thread pool). Every range must lie inside one
   * fd-backed region that allows `access`.
   *
   * Undefined when some range cannot be reached directly: memory served by
   * messages (no fd), a range spanning two maps or a 4 GiB window, memory
   * that does not allow `access` (a read-only map pinned 'readwrite') or is
   * not mapped at all. Then copy with read()/write() (or ScatterGather):
   * the copy works where only the path was the problem, and rejects with
   * the DmaError (EFAULT, EPERM) where the memory is. Throws DmaError EINVAL
   * for a malformed range. Nothing stays pinned after undefined or a throw.
   *
   * Made for hot paths: no closure, no exception; it allocates the pin and
   * one view per range (a run of ranges inside one region holds it once),
   * and gives up at the first range it cannot pin.
   *
   * ```ts
   * const pin = dev.dma.pin(sg.entries, 'readwrite');
   * if (pin) {
   *   try { await readFileInto(pin.views); } finally { pin.release(); }
   * } else {
   *   await sg.write(dev.dma, await readFileToBuffer(sg.length));
   * }
   * ```
   */
  pin(ranges: readonly DmaRange[], access: DmaAccess = 'readwrite'): DmaPin | undefined {
    const views: Uint8Array[] = [];
    const held: DmaRegion[] = [];
    let region: DmaRegion | undefined;
    for (let i = 0; i < ranges.length; i++) {
      const { addr, length } = ranges[i]!;
      if (typeof addr !== 'bigint' || addr < 0n || !Number.isSafeInteger(length) || length < 0) {
        for (const r of held) r.release();
        checkArgs(addr, length); // throws EINVAL
      }
      const end = addr + BigInt(length);
      if (region === undefined || addr < region.addr || end > region.end) {
        region = this.find(addr);
        if (region === undefined || region.mapping === undefined || end > region.end || !allows(region, access)) break;
        region.acquire(); // a DMA_UNMAP of this region now waits for release()
        held.push(region);
      }
      const view = region.view(addr, length);
      if (view === undefined) break; // crosses a 4 GiB window
      views.push(view);
    }
    if (views.length === ranges.length) {
      for (let i = 0; i < views.length; i++) this.stats.pinned += views[i]!.byteLength;
      return new DmaPin(views, held);
    }
    for (const r of held) r.release();
    return undefined;
  }

  /**
   * Zero-copy view of guest memory. Throws DmaError when the range is not
   * wholly inside one fd-backed region (EFAULT), crosses a 4 GiB window
   * (EFAULT), or the region lacks the needed protection (EPERM; `access`
   * 'read' allows READ-only regions: never write through such a view, the page
   * is mapped read-only and a write kills the process). The view goes
   * zero-length when the range is unmapped: hold() the range while using it.
   */
  view(gpa: bigint, length: number, access: DmaAccess = 'readwrite'): Uint8Array {
    checkArgs(gpa, length);
    const r = this.find(gpa);
    if (!r || gpa + BigInt(length) > r.end) throw DmaError.unmapped(gpa, length);
    if (!r.mapping)
      throw new DmaError(
        Errno.EFAULT,
        `DMA: [0x${gpa.toString(16)}, +0x${length.toString(16)}) is message-only (no fd): use read()/write()`,
      );
    if (!allows(r, access))
      throw new DmaError(
        Errno.EPERM,
        `DMA: 0x${gpa.toString(16)} is not ${access === 'read' ? 'readable' : 'read-write'}`,
      );
    const v = r.view(gpa, length);
    if (!v)
      throw new DmaError(
        Errno.EFAULT,
        `DMA: [0x${gpa.toString(16)}, +0x${length.toString(16)}) crosses a 4 GiB window: use read()/write()`,
      );
    return v;
  }

  /**
   * Copy guest memory out (any mix of fd-backed and message-only regions).
   * EFAULT unmapped (also when a region is unmapped while the transfer waits
   * on a message), EPERM not readable. Takes no hold: mmapped pieces are copied
   * synchronously, so a DMA_UNMAP never waits on a message round trip (which
   * could deadlock against a client that waits for the unmap's reply).
   */
  async read(gpa: bigint, length: number): Promise<Uint8Array> {
    const segs = this.#pieces(gpa, length);
    for (const s of segs)
      if (!s.region.readable) throw new DmaError(Errno.EPERM, `DMA read: 0x${s.gpa.toString(16)} is not readable`);
    const out = new Uint8Array(length);
    let done = 0;
    for (const s of segs) {
      const piece = out.subarray(done, done + s.length);
      if (s.region.removed) throw DmaError.unmapped(s.gpa, s.length);
      if (s.region.mapping) {
        s.region.copyOut(s.gpa, piece);
        this.stats.mappedRead += s.length;
      } else {
        piece.set(await this.#requirePort(s.gpa).dmaRead(s.gpa, s.length));
        this.stats.messageRead += s.length;
      }
      done += s.length;
    }
    return out;
  }

  /** Copy into guest memory. EFAULT unmapped, EPERM not writable (checked before any byte is written). No hold (see read()). */
  async write(gpa: bigint, data: Uint8Array): Promise<void> {
    const segs = this.#pieces(gpa, data.byteLength);
    for (const s of segs)
      if (!s.region.writable) throw new DmaError(Errno.EPERM, `DMA write: 0x${s.gpa.toString(16)} is read-only`);
    let done = 0;
    for (const s of segs) {
      const piece = data.subarray(done, done + s.length);
      if (s.region.removed) throw DmaError.unmapped(s.gpa, s.length);
      if (s.region.mapping) {
        s.region.copyIn(s.gpa, piece);
        this.stats.mappedWrite += s.length;
      } else {
        await this.#requirePort(s.gpa).dmaWrite(s.gpa, piece);
        this.stats.messageWrite += s.length;
      }
      done += s.length;
    }
  }

  #requirePort(gpa: bigint): ClientPort {
    if (!this.#port)
      throw new DmaError(Errno.ENOTCONN, `DMA: 0x${gpa.toString(16)} is message-only and no client is attached`);
    return this.#port;
  }
}
