/**
 * Guest memory as the commands of one controller life see it. A controller
 * reset waits for running commands only up to a bound (registers.ts): one
 * still running after it (its DMA message never answered, its file I/O
 * stuck on the host) must not touch guest memory the host may have given
 * to something else. So every reset revokes the commands' DMA handle and
 * makes a new one: a command takes the handle once, when it starts
 * (IoContext.dma), and after a revoke every access through it fails with
 * Data Transfer Error. What the kernel is already doing on pinned memory
 * (a preadv in flight) cannot be recalled; the reset waited for it as long
 * as it could.
 */
import { Status } from './constants.js';
import { NvmeStatusError, type DmaAccess, type NvmeDma, type PinnedViews } from './host.js';

function revokedError(): NvmeStatusError {
  return new NvmeStatusError(Status.DATA_TRANSFER_ERROR, 'the controller was reset while the command ran');
}

export class CommandDma implements NvmeDma {
  private revoked = false;

  constructor(private readonly dma: NvmeDma) {}

  /** From now on every access fails (the controller was reset). */
  revoke(): void {
    this.revoked = true;
  }

  view(addr: bigint, length: number, access?: DmaAccess): Uint8Array | undefined {
    if (this.revoked) throw revokedError();
    return this.dma.view(addr, length, access);
  }

  markDirty(addr: bigint, length: number): void {
    this.dma.markDirty?.(addr, length);
  }

  read(addr: bigint, length: number): Promise<Uint8Array> {
    if (this.revoked) return Promise.reject(revokedError());
    return this.dma.read(addr, length);
  }

  write(addr: bigint, data: Uint8Array): Promise<void> {
    if (this.revoked) return Promise.reject(revokedError());
    return this.dma.write(addr, data);
  }

  pin(ranges: readonly { addr: bigint; length: number }[], access?: DmaAccess): PinnedViews | undefined {
    if (this.revoked) return undefined; // the copy path then fails with the revoked error
    return this.dma.pin?.(ranges, access);
  }
}
