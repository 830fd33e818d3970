/**
 * DEVICE_FEATURE, MIG_DATA_READ, MIG_DATA_WRITE: migration is not supported,
 * so every well-formed request is EINVAL (libvfio-user without migration does
 * the same); malformed ones are EINVAL from the decoder.
 */
import { VfioUserError } from '../../protocol/errors.js';
import { VfioUserCommand, decodeDeviceFeature, decodeMigDataReadRequest, decodeMigDataWriteRequest } from '../../protocol/index.js';
import type { HandlerResult, RequestContext } from './context.js';

export function handleDeviceFeature(ctx: RequestContext): HandlerResult {
  const f = decodeDeviceFeature(ctx.message);
  throw VfioUserError.invalid(`DEVICE_FEATURE 0x${f.flags.toString(16)}: no device features are supported`);
}

export function handleMigDataRead(ctx: RequestContext): HandlerResult {
  decodeMigDataReadRequest(ctx.message);
  throw VfioUserError.invalid('MIG_DATA_READ: migration is not supported');
}

export function handleMigDataWrite(ctx: RequestContext): HandlerResult {
  decodeMigDataWriteRequest(ctx.message);
  throw VfioUserError.invalid('MIG_DATA_WRITE: migration is not supported');
}

export const miscHandlers = {
  [VfioUserCommand.DEVICE_FEATURE]: handleDeviceFeature,
  [VfioUserCommand.MIG_DATA_READ]: handleMigDataRead,
  [VfioUserCommand.MIG_DATA_WRITE]: handleMigDataWrite,
} as const;
