/**
 * DEVICE_FEATURE: no device features are supported (migration, dirty page
 * logging), so every well-formed request is EINVAL (libvfio-user without
 * migration does the same); malformed ones are EINVAL from the decoder.
 */
import { VfioUserError } from '../../../protocol/errors.js';
import { VfioUserCommand, decodeDeviceFeature } from '../../../protocol/index.js';
import type { HandlerResult, RequestContext } from '../context.js';

function handleDeviceFeature(ctx: RequestContext): HandlerResult {
  const f = decodeDeviceFeature(ctx.message);
  throw VfioUserError.invalid(`DEVICE_FEATURE 0x${f.flags.toString(16)}: no device features are supported`);
}

export const featuresHandlers = { [VfioUserCommand.DEVICE_FEATURE]: handleDeviceFeature } as const;
