/**
 * The errors of the vfio-user wire: each carries the errno that goes into the
 * error reply (libvfio-user's choice for the same input). Used by both ends:
 * the server answers with it, the client reports it.
 */
import { Errno } from './constants.js';

/** An error that becomes an error reply with this errno. Any other thrown error becomes EIO (and is logged). */
export class VfioUserError extends Error {
  constructor(
    public readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = 'VfioUserError';
  }
  static invalid(message: string): VfioUserError {
    return new VfioUserError(Errno.EINVAL, message);
  }
}

/** A malformed or unacceptable message. `errno` is what goes into the error reply. */
export class ProtocolError extends VfioUserError {
  constructor(errno: number, message: string) {
    super(errno, message);
    this.name = 'ProtocolError';
  }
  /** EINVAL: the answer to nearly every malformed message. */
  static override invalid(message: string): ProtocolError {
    return new ProtocolError(Errno.EINVAL, message);
  }
}
