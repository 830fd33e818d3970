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
 *   dma.setBusMaster(enabled);              // PCI Command bit 2 (PciDevice does it)
 *   dma.freeze(); dma.thaw();               // migration STOP..RUNNING: new accesses are refused meanwhile
 *   dma.startDirtyLogging(4096n, []); dma.reportDirty(iova, n, 4096n); dma.stopDirtyLogging();
 *
 * Bus mastering: while it is off (PCI Command.MASTER clear: PciDevice keeps
 * the space in step with the guest's Command register) every device access
 * (read, write, view; pin answers undefined) throws BusMasterDisabledError,
 * and message transfers in progress reject with it at once. A device must
 * not master the bus when the guest said no; QEMU's own devices get a
 * decode error then (their bus-master address space is disabled), and
 * QEMU answers our DMA_READ/DMA_WRITE with ENODEV, but fd-backed memory we
 * map ourselves bypasses QEMU, so the rule is enforced here. A DmaSpace of
 * its own (no PciDevice) starts with bus mastering on.
 *
 * fd-backed ranges are mmapped (native.mmapFd, MAP_SHARED, with the map's
 * protection) and the fd is closed right after; ranges without an fd are served
 * with DMA_READ / DMA_WRITE messages through the attached ClientPort. Overlap
 * with an existing range is EINVAL (libvfio-user), an identical re-map is
 * accepted, unmap of anything but an exact existing range is ENOENT.
 */
import { fstatSync } from 'node:fs';
import type { Logger } from 'pino';
import { LogLimiter } from '../log-limiter.js';
import { native } from '../../native/index.js';
import type { ClientPort, DmaMapRequest } from '../endpoint.js';
import { DmaMapFlag, Errno, Limits } from '../../protocol/constants.js';
import { BusMasterDisabledError, DmaError } from './errors.js';
import { DirtyLog, type LoggedRange } from './dirty-log.js';
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
  /** Most ranges at once (default 65535, what we advertise): more is EINVAL. */
  maxMaps?: number;
  /**
   * Most bytes of client memory mmapped at once (default 8 TiB, the largest
   * single map): address space is finite (128 TiB on x86-64, shared with the
   * JS heap and every other device in the process). A range with an fd
   * beyond it is served by DMA messages instead (slower, still correct).
   */
  maxMappedBytes?: bigint;
  /**
   * Most ranges mmapped at once (default 16384): each is a kernel mapping,
   * and a process has 65530 (vm.max_map_count), which Node needs too. Beyond
   * it, ranges with an fd are served by DMA messages.
   */
  maxMappedRanges?: number;
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

/** How DmaSpace.read/write reach memory. */
export interface DmaTransferOptions {
  /**
   * 'auto' (default): mapped memory directly, the rest by DMA_READ/DMA_WRITE
   * messages. 'messages': always by messages, also where the client shared an
   * fd (what libvfio-user's sample server does for its first map).
   */
  via?: 'auto' | 'messages';
}

/** Most ranges one DMA_LOGGING_START may list. */
const MAX_LOGGED_RANGES = 4096;
/** Largest bitmap one DMA_LOGGING_REPORT returns (32 MiB: 1 TiB of 4 KiB pages). */
const MAX_DIRTY_BITMAP_BYTES = 32 << 20;
/** Logging page sizes accepted by DMA_LOGGING_START: powers of two in this range. */
const MIN_LOG_PAGE = 4096;
const MAX_LOG_PAGE = 1 << 30;

function isPowerOfTwo(n: bigint): boolean {
  return n > 0n && (n & (n - 1n)) === 0n;
}

const PAGE = BigInt(Limits.PGSIZE);

/** Defaults of DmaSpaceOptions.maxMappedBytes and maxMappedRanges. */
const MAX_MAPPED_BYTES = 1n << 43n;
const MAX_MAPPED_RANGES = 16384;

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
  readonly #limiter: LogLimiter;
  readonly #maxMaps: number;
  readonly #maxMappedBytes: bigint;
  readonly #maxMappedRanges: number;
  /** What is mmapped now (fd-backed ranges not yet unmapped). */
  #mappedBytes = 0n;
  #mappedRanges = 0;
  /** Sorted by addr, non-overlapping. */
  #regions: DmaRegion[] = [];
  #port: ClientPort | undefined;
  readonly #unsealed: UnsealedFdPolicy;
  #warnedUnsealed = false;
  readonly #mapListeners: DmaMapListener[] = [];
  readonly #unmapListeners: DmaMapListener[] = [];
  /** Listener failures so far (the first is logged as an error, the rest at debug: the client decides how often they run). */
  #listenerFailures = 0;
  /** Bus Master Enable: device accesses allowed. */
  #busMaster = true;
  readonly #busMasterListeners: ((enabled: boolean) => void)[] = [];
  /** Message transfers (DMA_READ/DMA_WRITE) in progress: rejected at once when bus mastering goes off. */
  readonly #messages = new Set<(err: Error) => void>();
  readonly #dirty = new DirtyLog();
  /** Set between freeze() and thaw(): the device was stopped for a migration and must not touch guest memory. */
  #frozen = false;
  /** Bytes moved, by path, since the space was created (metrics; read-only for callers). */
  readonly stats: DmaStats = { mappedRead: 0, mappedWrite: 0, pinned: 0, messageRead: 0, messageWrite: 0 };

  constructor(log: Logger, options: DmaSpaceOptions = {}) {
    this.log = log;
    this.#limiter = new LogLimiter(log);
    this.#maxMaps = options.maxMaps ?? Limits.MAX_DMA_MAPS;
    this.#maxMappedBytes = options.maxMappedBytes ?? MAX_MAPPED_BYTES;
    this.#maxMappedRanges = options.maxMappedRanges ?? MAX_MAPPED_RANGES;
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

  /**
   * #mayMap for a DMA_MAP request (the mmap covers whole pages from the page
   * holding `offset`), and within the mmap budget (maxMappedBytes,
   * maxMappedRanges; beyond it: messages).
   */
  #mayMapRange(fd: number, req: DmaMapRequest, what: string): boolean {
    const end = ((req.offset + req.size + PAGE - 1n) / PAGE) * PAGE;
    if (!this.#mayMap(fd, Number(end), what)) return false;
    if (this.#mappedRanges < this.#maxMappedRanges && this.#mappedBytes + req.size <= this.#maxMappedBytes) return true;
    this.#limiter.warn(
      'dma-mmap-budget',
      { mappedBytes: `0x${this.#mappedBytes.toString(16)}`, mappedRanges: this.#mappedRanges },
      `${what}: beyond the mmap budget (${this.#maxMappedRanges} ranges, 0x${this.#maxMappedBytes.toString(16)} bytes): served by DMA messages`,
    );
    return false;
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

  /**
   * Unmap everything and forget the port. The ranges and the port go at
   * once (a client attached after this call is not affected by it); the
   * promise resolves once the fd-backed ranges' users are gone and their
   * mappings with them.
   */
  async detach(): Promise<void> {
    this.#port = undefined;
    this.#dirty.stop();
    await this.unmap(0n, 0n, true);
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
        this.#limiter.warn('dma-fd-close-failed', { err, fd: f }, 'DMA: closing a map fd failed');
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
        this.#mappedBytes += BigInt(mapping.length);
        this.#mappedRanges++;
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
      if (r?.addr !== addr || r.size !== size) {
        throw new DmaError(
          Errno.ENOENT,
          `DMA_UNMAP [0x${addr.toString(16)}, +0x${size.toString(16)}): no such mapping`,
        );
      }
      this.#regions.splice(i, 1);
      victims = [r];
    }
    for (const r of victims) {
      r.removed = true;
      this.#dirty.forget(r);
    }
    for (const r of victims) this.#tell(this.#unmapListeners, r, 'unmap');
    // Only mmapped memory needs its users gone first; a message-only range has
    // nothing to protect (and waiting could deadlock on the client).
    await Promise.all(
      victims.map(async (r) => {
        if (!r.mapping) return;
        await r.drained();
        r.mapping.unmap();
        // The range stays reserved (PROT_NONE) until the mapping is collected,
        // which the next map's external-memory pressure brings about.
        this.#mappedBytes -= BigInt(r.mapping.length);
        this.#mappedRanges--;
      }),
    );
    if (victims.length > 0) this.log.debug({ count: victims.length, all }, 'DMA: unmapped');
  }

  /**
   * Swap every mapped range (and the mmap budget they use) with `other`'s:
   * a device reload hands the client's DMA mappings to the new generation
   * without unmapping them. Both devices must be quiesced (nothing held or
   * pinned). The onMap listeners of the space that receives ranges are told
   * of each.
   */
  exchangeMappings(other: DmaSpace): void {
    [this.#regions, other.#regions] = [other.#regions, this.#regions];
    [this.#mappedBytes, other.#mappedBytes] = [other.#mappedBytes, this.#mappedBytes];
    [this.#mappedRanges, other.#mappedRanges] = [other.#mappedRanges, this.#mappedRanges];
    for (const r of this.#regions) this.#tell(this.#mapListeners, r, 'map');
    for (const r of other.#regions) other.#tell(other.#mapListeners, r, 'map');
  }

  /**
   * Resolves when no hold() remains on any region (for a device reset that
   * must quiesce DMA but keep the maps, as DEVICE_RESET does).
   */
  async quiesce(): Promise<void> {
    await Promise.all(this.#regions.map((r) => r.drained()));
  }

  /** Whether the device may access guest memory (PCI Command.MASTER; true for a DmaSpace of its own). */
  get busMaster(): boolean {
    return this.#busMaster;
  }

  /**
   * Turn bus mastering on or off (PciDevice calls it on every Command
   * register change, and on reset). Off: every later access throws
   * BusMasterDisabledError and message transfers in progress reject with
   * it; views handed out earlier stay valid (the device must stop using
   * them: listen with onBusMasterChange). The listeners run on every change.
   */
  setBusMaster(enabled: boolean): void {
    if (this.#busMaster === enabled) return;
    this.#busMaster = enabled;
    if (!enabled) {
      const pending = [...this.#messages];
      this.#messages.clear();
      for (const reject of pending) reject(new BusMasterDisabledError());
    }
    for (const listener of this.#busMasterListeners.slice()) {
      try {
        listener(enabled);
      } catch (err) {
        this.log.error({ err }, 'DMA: a bus-master listener threw');
      }
    }
  }

  /**
   * Call `listener(enabled)` whenever bus mastering changes, e.g. to drop
   * cached views of guest memory when it goes off (a view is plain memory:
   * the space cannot stop accesses through it). Returns a function that
   * removes the listener.
   */
  onBusMasterChange(listener: (enabled: boolean) => void): () => void {
    this.#busMasterListeners.push(listener);
    return () => {
      const i = this.#busMasterListeners.indexOf(listener);
      if (i >= 0) this.#busMasterListeners.splice(i, 1);
    };
  }

  /** Throws BusMasterDisabledError for an access to [gpa, gpa+length) while bus mastering is off. */
  #checkBusMaster(gpa: bigint, length: number): void {
    if (!this.#busMaster) throw new BusMasterDisabledError(gpa, length);
  }

  /** `transfer`, rejected with BusMasterDisabledError as soon as bus mastering goes off. */
  #message<T>(transfer: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#messages.add(reject);
      transfer.then(
        (v) => {
          this.#messages.delete(reject);
          resolve(v);
        },
        (err: unknown) => {
          this.#messages.delete(reject);
          reject(err);
        },
      );
    });
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
   * Undefined when some range cannot be reached directly: bus mastering is
   * off, memory served by
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
    if (!this.#busMaster) return undefined; // the copy path reports BusMasterDisabledError
    if (this.#frozen) {
      this.#refuseFrozen('pin');
      return undefined;
    }
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
        if (region?.mapping === undefined || end > region.end || !allows(region, access)) break;
        region.acquire(); // a DMA_UNMAP of this region now waits for release()
        held.push(region);
      }
      const view = region.view(addr, length);
      if (view === undefined) break; // crosses a 4 GiB window
      views.push(view);
    }
    if (views.length === ranges.length) {
      for (const v of views) this.stats.pinned += v.byteLength;
      if (access !== 'readwrite' || !this.#dirty.active) return new DmaPin(views, held);
      // Logging: the pages count as written when pinned (a REPORT may come while the I/O runs)
      // and again when released (the I/O wrote them after that REPORT).
      const mark = (): void => {
        for (const r of ranges) this.markDirty(r.addr, r.length);
      };
      mark();
      return new DmaPin(views, held, mark);
    }
    for (const r of held) r.release();
    return undefined;
  }

  /**
   * Zero-copy view of guest memory. Throws BusMasterDisabledError while bus
   * mastering is off, DmaError when the range is not
   * wholly inside one fd-backed region (EFAULT), crosses a 4 GiB window
   * (EFAULT), or the region lacks the needed protection (EPERM; `access`
   * 'read' allows READ-only regions: never write through such a view, the page
   * is mapped read-only and a write kills the process). The view goes
   * zero-length when the range is unmapped: hold() the range while using it.
   */
  view(gpa: bigint, length: number, access: DmaAccess = 'readwrite'): Uint8Array {
    checkArgs(gpa, length);
    this.#checkBusMaster(gpa, length);
    if (this.#frozen) throw this.#refuseFrozen('view');
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
    // Writes through the view are invisible to us: its pages count as dirty in every report from now on.
    if (access === 'readwrite' && this.#dirty.active) this.#dirty.mark(r, gpa, length, true);
    return v;
  }

  /**
   * Copy guest memory out (any mix of fd-backed and message-only regions).
   * BusMasterDisabledError (ENODEV) while bus mastering is off, EFAULT unmapped (also when a region is unmapped while the transfer waits
   * on a message), EPERM not readable. Takes no hold: mmapped pieces are copied
   * synchronously, so a DMA_UNMAP never waits on a message round trip (which
   * could deadlock against a client that waits for the unmap's reply).
   */
  async read(gpa: bigint, length: number, options?: DmaTransferOptions): Promise<Uint8Array> {
    this.#checkBusMaster(gpa, length);
    if (this.#frozen) throw this.#refuseFrozen('read');
    const segs = this.#pieces(gpa, length);
    const messages = options?.via === 'messages';
    for (const s of segs)
      if (!s.region.readable) throw new DmaError(Errno.EPERM, `DMA read: 0x${s.gpa.toString(16)} is not readable`);
    const out = new Uint8Array(length);
    let done = 0;
    for (const s of segs) {
      const piece = out.subarray(done, done + s.length);
      if (s.region.removed) throw DmaError.unmapped(s.gpa, s.length);
      this.#checkBusMaster(s.gpa, s.length); // again: it may have gone off during a message before
      if (s.region.mapping && !messages) {
        s.region.copyOut(s.gpa, piece);
        this.stats.mappedRead += s.length;
      } else {
        piece.set(await this.#message(this.#requirePort(s.gpa).dmaRead(s.gpa, s.length)));
        this.stats.messageRead += s.length;
      }
      done += s.length;
    }
    return out;
  }

  /** Copy into guest memory. BusMasterDisabledError while bus mastering is off, EFAULT unmapped, EPERM not writable (checked before any byte is written). No hold (see read()). */
  async write(gpa: bigint, data: Uint8Array, options?: DmaTransferOptions): Promise<void> {
    this.#checkBusMaster(gpa, data.byteLength);
    if (this.#frozen) throw this.#refuseFrozen('write');
    const segs = this.#pieces(gpa, data.byteLength);
    const messages = options?.via === 'messages';
    for (const s of segs)
      if (!s.region.writable) throw new DmaError(Errno.EPERM, `DMA write: 0x${s.gpa.toString(16)} is read-only`);
    let done = 0;
    for (const s of segs) {
      const piece = data.subarray(done, done + s.length);
      if (s.region.removed) throw DmaError.unmapped(s.gpa, s.length);
      this.#checkBusMaster(s.gpa, s.length); // again: it may have gone off during a message before
      this.#dirty.mark(s.region, s.gpa, s.length);
      if (s.region.mapping && !messages) {
        s.region.copyIn(s.gpa, piece);
        this.stats.mappedWrite += s.length;
      } else {
        await this.#message(this.#requirePort(s.gpa).dmaWrite(s.gpa, piece));
        this.stats.messageWrite += s.length;
      }
      done += s.length;
    }
  }

  /**
   * Tell dirty-page logging that the device wrote [gpa, gpa+length) some way
   * the space cannot see (through a view() kept from before logging started, a
   * native call with a view's address...). write(), message DMA and pins mark
   * their pages themselves. Unmapped parts are ignored. Cheap when logging is off.
   */
  markDirty(gpa: bigint, length: number): void {
    if (!this.#dirty.active || length <= 0) return;
    const end = gpa + BigInt(length);
    for (let i = this.#firstEndingAfter(gpa); i < this.#regions.length; i++) {
      const r = this.#regions[i]!;
      if (r.addr >= end) break;
      this.#dirty.mark(r, gpa, length);
    }
  }

  /** Whether dirty-page logging is on (DMA_LOGGING_START), and at what page size (0: off). */
  get dirtyLogPageSize(): number {
    return this.#dirty.pageSize;
  }

  /**
   * DMA_LOGGING_START. EINVAL: page size not a power of two in [4 KiB, 1 GiB],
   * already logging at another page size, a map smaller than the page size, a
   * range that is empty, overlaps another or is not aligned to the page size;
   * EOVERFLOW: a range past 2^64; E2BIG: more than MAX_LOGGED_RANGES ranges.
   * No ranges: every write is logged. Started again with the same page size:
   * the new ranges apply and the marks so far stay.
   */
  startDirtyLogging(pageSize: bigint, ranges: readonly LoggedRange[]): void {
    const what = `DMA_LOGGING_START page size ${pageSize}`;
    if (!isPowerOfTwo(pageSize) || pageSize < BigInt(MIN_LOG_PAGE) || pageSize > BigInt(MAX_LOG_PAGE))
      throw new DmaError(Errno.EINVAL, `${what}: not a power of two in [${MIN_LOG_PAGE}, ${MAX_LOG_PAGE}]`);
    const ps = Number(pageSize);
    if (this.#dirty.active && this.#dirty.pageSize !== ps)
      throw new DmaError(Errno.EINVAL, `${what}: already logging with page size ${this.#dirty.pageSize}`);
    if (ranges.length > MAX_LOGGED_RANGES)
      throw new DmaError(Errno.E2BIG, `${what}: ${ranges.length} ranges, at most ${MAX_LOGGED_RANGES}`);
    const sorted = [...ranges].sort((a, b) => (a.iova < b.iova ? -1 : a.iova > b.iova ? 1 : 0));
    let previousEnd = 0n;
    for (const r of sorted) {
      const where = `${what}: range [0x${r.iova.toString(16)}, +0x${r.length.toString(16)})`;
      if (r.length === 0n || r.iova % pageSize !== 0n || r.length % pageSize !== 0n)
        throw new DmaError(Errno.EINVAL, `${where} is empty or not page aligned`);
      if (r.iova + r.length > 1n << 64n) throw new DmaError(Errno.EOVERFLOW, `${where} runs past 2^64`);
      if (r.iova < previousEnd) throw new DmaError(Errno.EINVAL, `${where} overlaps another`);
      previousEnd = r.iova + r.length;
    }
    for (const r of this.#regions) {
      if (r.size < pageSize)
        throw new DmaError(Errno.EINVAL, `${what}: map at 0x${r.addr.toString(16)} is smaller than a page`);
    }
    this.#dirty.start(ps, sorted);
    this.log.debug({ pageSize: ps, ranges: sorted.length }, 'DMA: dirty-page logging started');
  }

  /** DMA_LOGGING_STOP: stop and forget every mark (also when not logging). */
  stopDirtyLogging(): void {
    if (this.#dirty.active) this.log.debug('DMA: dirty-page logging stopped');
    this.#dirty.stop();
  }

  /**
   * DMA_LOGGING_REPORT: the bitmap of [iova, iova+length) at `pageSize` (a
   * power of two, checked by the caller along with length >= pageSize), and
   * clear what it reported. The range must start at the base of one map and
   * stay inside it. ENOENT: not mapped; ENOTSUP: not at a map's base, or
   * running into the next map (libvfio-user answers that with an empty
   * success); EINVAL: logging is off; E2BIG: a bitmap over MAX_DIRTY_BITMAP_BYTES.
   * Maps without an fd are logged too (libvfio-user refuses them: it sees
   * only writes through its mappings; we see message DMA as well).
   */
  reportDirty(iova: bigint, length: bigint, pageSize: bigint): Uint8Array {
    const what = `DMA_LOGGING_REPORT [0x${iova.toString(16)}, +0x${length.toString(16)})`;
    const r = this.find(iova);
    if (!r) throw new DmaError(Errno.ENOENT, `${what}: not mapped`);
    if (r.addr !== iova) throw new DmaError(Errno.ENOTSUP, `${what}: does not start at its map's base`);
    if (iova + length > r.end) {
      // Into the next map (libvfio-user: an empty success) or into unmapped memory.
      if (this.find(r.end)) throw new DmaError(Errno.ENOTSUP, `${what}: spans two maps (report each map alone)`);
      throw new DmaError(Errno.ENOENT, `${what}: runs past its map into unmapped memory`);
    }
    if (!this.#dirty.active) throw new DmaError(Errno.EINVAL, `${what}: dirty-page logging is off`);
    const bitmapBytes = (((length + pageSize - 1n) / pageSize + 63n) / 64n) * 8n;
    if (bitmapBytes > BigInt(MAX_DIRTY_BITMAP_BYTES))
      throw new DmaError(Errno.E2BIG, `${what}: a bitmap of ${bitmapBytes} bytes`);
    return this.#dirty.report(r, Number(length), Number(pageSize));
  }

  /**
   * Migration stopped the device (after its quiesce): from now until thaw(),
   * read/write reject with EBUSY, view() throws it and pin() answers
   * undefined, so a device that missed something in its quiesce cannot
   * change guest memory behind a saved state. Maps may still change.
   */
  freeze(): void {
    this.#frozen = true;
  }

  /** The device runs again: accesses work. */
  thaw(): void {
    this.#frozen = false;
  }

  /** Whether freeze() is in force. */
  get frozen(): boolean {
    return this.#frozen;
  }

  #refuseFrozen(op: string): DmaError {
    this.#limiter.warn(
      'dma-while-stopped',
      { op },
      'DMA while the device is stopped for migration: refused (its quiesce let work through)',
    );
    return new DmaError(Errno.EBUSY, `DMA ${op} while the device is stopped for migration`);
  }

  #requirePort(gpa: bigint): ClientPort {
    if (!this.#port)
      throw new DmaError(Errno.ENOTCONN, `DMA: 0x${gpa.toString(16)} is message-only and no client is attached`);
    return this.#port;
  }
}
