/**
 * What the NVMe controller core needs from the PCI device around it: guest
 * memory access and interrupts. `controller.ts` adapts a PciDevice to this;
 * keeping it narrow lets the core run against any DMA space.
 */

/** How a view is used: 'read' never writes through it (and so marks no page dirty), 'readwrite' (the default) may. */
export type DmaAccess = 'read' | 'readwrite';

/** Guest-physical memory as the device sees it. Every method throws (or rejects) on an address no DMA map covers. */
export interface NvmeDma {
  /**
   * A live view of [addr, addr+length) when the range lies in one fd-backed
   * mapping, else undefined (fd-less memory, or the range spans maps). Valid
   * only until the current synchronous run ends: never keep it across an await.
   * A 'readwrite' view taken while dirty-page logging is on counts its pages
   * as written until logging stops; take 'read' views for reading.
   */
  view(addr: bigint, length: number, access?: DmaAccess): Uint8Array | undefined;
  /** Copy guest bytes out (by message when the memory is not mapped). */
  read(addr: bigint, length: number): Promise<Uint8Array>;
  /** Copy bytes into guest memory (by message when the memory is not mapped). */
  write(addr: bigint, data: Uint8Array): Promise<void>;
  /**
   * Zero-copy access for async file I/O: views of every range, all fd-backed,
   * held so that a DMA_UNMAP waits until release(). Undefined when any range
   * is not directly mapped (then copy through read()/write()). `access`
   * 'read' (the device only reads the memory: a Write command's data) marks
   * no page dirty; 'readwrite' (the default) does, while dirty logging is on.
   */
  pin?(ranges: readonly { addr: bigint; length: number }[], access?: DmaAccess): PinnedViews | undefined;
  /**
   * Tell dirty-page logging (migration) that [addr, addr+length) was written
   * through a view kept from earlier (a queue ring, the EventIdx page): the
   * DMA space cannot see such writes. Cheap when logging is off.
   */
  markDirty?(addr: bigint, length: number): void;
}

/** Guest memory views kept mapped until release(). */
export interface PinnedViews {
  readonly views: Uint8Array[];
  release(): void;
}

export interface NvmeHost {
  readonly dma: NvmeDma;
  /** Whether MSI-X is enabled: then each CQ signals its own vector; otherwise everything goes to INTx/MSI vector 0. */
  msixEnabled(): boolean;
  /** Signal `vector` of the active interrupt type. */
  interrupt(vector: number): void;
  /**
   * Call `listener` when the guest turns bus mastering on or off (PCI
   * Command bit 2). While it is off every `dma` access fails; views the core
   * cached must be dropped then.
   */
  onBusMasterChange?(listener: (enabled: boolean) => void): void;
}

/** Thrown by command handlers: completes the command with this 15-bit NVMe status. */
export class NvmeStatusError extends Error {
  constructor(
    public readonly status: number,
    message?: string,
  ) {
    super(message ?? `NVMe status 0x${status.toString(16)}`);
    this.name = 'NvmeStatusError';
  }
}
