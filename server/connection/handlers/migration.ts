/**
 * MIG_DATA_READ, MIG_DATA_WRITE: migration is not supported, so every
 * well-formed request is EINVAL (libvfio-user without migration does the
 * same); malformed ones are EINVAL from the decoder.
 */
import { VfioUserError } from '../../../protocol/errors.js';
import { VfioUserCommand, decodeMigDataReadRequest, decodeMigDataWriteRequest } from '../../../protocol/index.js';
import type { HandlerResult, RequestContext } from '../context.js';

function handleMigDataRead(ctx: RequestContext): HandlerResult {
  decodeMigDataReadRequest(ctx.message);
  throw VfioUserError.invalid('MIG_DATA_READ: migration is not supported');
}

function handleMigDataWrite(ctx: RequestContext): HandlerResult {
  decodeMigDataWriteRequest(ctx.message);
  throw VfioUserError.invalid('MIG_DATA_WRITE: migration is not supported');
}

export const migrationHandlers = {
  [VfioUserCommand.MIG_DATA_READ]: handleMigDataRead,
  [VfioUserCommand.MIG_DATA_WRITE]: handleMigDataWrite,
} as const;
