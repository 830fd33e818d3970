/** DmaError: a device-side DMA access the address space cannot serve. */
import { VfioUserError } from '../../protocol/errors.js';
import { Errno } from '../../protocol/constants.js';

/**
 * Carries an errno so that, thrown out of a request handler, it becomes an
 * error reply: EFAULT (not mapped), EPERM (protection), EINVAL (bad argument),
 * ENOENT (unmap of an unknown range), ENOTCONN (message-only range, no client).
 */
export class DmaError extends VfioUserError {
  constructor(errno: number, message: string) {
    super(errno, message);
    this.name = 'DmaError';
  }
  static unmapped(gpa: bigint, length: number | bigint): DmaError {
    return new DmaError(Errno.EFAULT, `DMA: [0x${gpa.toString(16)}, +0x${length.toString(16)}) is not (fully) mapped`);
  }
}

/**
 * The guest has cleared Bus Master Enable (bit 2 of the PCI Command
 * register): the device may not read or write guest memory now. A device
 * handles it like the bus error real hardware gets (NVMe: Controller Fatal
 * Status for a queue access, Data Transfer Error for data); it goes away
 * when the guest sets the bit again. The errno is ENODEV, what QEMU answers
 * a DMA_READ/DMA_WRITE message with while the bit is clear.
 */
export class BusMasterDisabledError extends DmaError {
  /** `gpa`/`length`: the access refused (absent: a transfer in progress, cut off when the bit went clear). */
  constructor(gpa?: bigint, length?: number | bigint) {
    const what =
      gpa === undefined ? 'a transfer in progress' : `[0x${gpa.toString(16)}, +0x${(length ?? 0).toString(16)})`;
    super(Errno.ENODEV, `DMA: ${what}: bus mastering is disabled (PCI Command bit 2 clear)`);
    this.name = 'BusMasterDisabledError';
  }
}
