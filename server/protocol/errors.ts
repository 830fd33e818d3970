/**
 * The one error type protocol decoders throw: it carries the errno the server
 * answers with (libvfio-user's choice for the same malformed input).
 */
import { VfioUserError } from '../endpoint.js';
import { Errno } from './constants.js';

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
