/** What the protocol tests look at inside a device, whichever model serves it. */
import type { Endpoint, ResetReason } from '../../server/endpoint.js';

export interface DeviceUnderTest extends Endpoint {
  /** Every reset, in order, with its reason. */
  readonly resets: ResetReason[];
  readonly attaches: number;
  readonly detaches: number;
  /** The DMA ranges the device currently has (fd-backed ones are `mapped`). */
  dmaRanges(): { addr: bigint; size: bigint; mapped: boolean }[];
  /** Whether an eventfd is installed for `vector` of IRQ `index`. */
  hasEventfd(index: number, vector: number): boolean;
  /** Signal `vector` of the active interrupt type. */
  signal(vector: number): void;
  /** The standard capability list as the device lays it out ({ id, offset } in list order). */
  readonly expectedCapabilities: { id: number; offset: number; extended: boolean }[];
  /** Release the device's own fds (after its server stopped). */
  close(): void;
}
