/**
 * DmaPin: guest memory held for direct access, what DmaSpace.pin hands out
 * (the role of libvfio-user's vfu_sgl_get / vfu_sgl_put). A class, not a
 * closure: pinning sits on device hot paths (an NVMe read pins its PRP pages
 * for every command), so it allocates only the pin and its views.
 */
import type { DmaRegion } from './region.js';

export class DmaPin {
  /**
   * One zero-copy view per pinned range, in the order given to pin(): writes
   * land in guest memory. Valid until release(); afterwards a view may go
   * zero-length at any time (the client unmapped the memory), never keep one.
   */
  readonly views: Uint8Array[];
  /** The regions held (a region appears once per run of ranges inside it). */
  readonly #regions: DmaRegion[];
  /** Dirty-page logging: marks the pinned pages written (a writable pin taken while logging). */
  readonly #onRelease: (() => void) | undefined;
  #released = false;

  /** Made by DmaSpace.pin: `regions` are already acquired, release() lets them go (after `onRelease`). */
  constructor(views: Uint8Array[], regions: DmaRegion[], onRelease?: () => void) {
    this.views = views;
    this.#regions = regions;
    this.#onRelease = onRelease;
  }

  /** Let the memory go: a DMA_UNMAP waiting for this pin proceeds. Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#onRelease?.();
    for (const r of this.#regions) r.release();
  }
}
