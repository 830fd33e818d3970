/** Errors the client rejects with. */
import { Errno, commandName } from '../protocol/constants.js';

const errnoNames = new Map<number, string>(Object.entries(Errno).map(([name, value]) => [value, name]));

/** The symbolic name of an errno value ('EINVAL'), or `E<n>` when unknown. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/**
 * A request failed: the server sent an error reply (`errno` is its error
 * field), the request timed out (ETIMEDOUT) or the connection closed before the
 * reply (ECONNRESET). `code` is the errno's name, like Node's system errors.
 */
export class VfioUserClientError extends Error {
  readonly code: string;
  constructor(
    readonly errno: number,
    readonly command: number,
    message?: string,
  ) {
    super(message ?? `${commandName(command)} failed: ${errnoName(errno)} (${errno})`);
    this.name = 'VfioUserClientError';
    this.code = errnoName(errno);
  }
}
