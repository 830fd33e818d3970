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
