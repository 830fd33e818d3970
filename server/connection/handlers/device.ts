/** DEVICE_GET_INFO and DEVICE_RESET: validated with libvfio-user's errno. */
import { VfioUserError } from '../../../protocol/errors.js';
import {
  DEVICE_INFO_SIZE,
  DeviceFlag,
  VfioUserCommand,
  decodeDeviceInfo,
  encodeDeviceInfoReply,
  encodeDeviceResetReply,
} from '../../../protocol/index.js';
import type { HandlerResult, RequestContext } from '../context.js';

function handleDeviceGetInfo(ctx: RequestContext): HandlerResult {
  const req = decodeDeviceInfo(ctx.message);
  if (req.argsz < DEVICE_INFO_SIZE)
    throw VfioUserError.invalid(`DEVICE_GET_INFO: argsz ${req.argsz} < ${DEVICE_INFO_SIZE}`);
  const e = ctx.endpoint;
  return {
    reply: encodeDeviceInfoReply(ctx.header.id, {
      argsz: DEVICE_INFO_SIZE,
      flags: DeviceFlag.PCI | (e.resetSupported ? DeviceFlag.RESET : 0),
      numRegions: e.numRegions,
      numIrqs: e.numIrqs,
    }),
  };
}

async function handleDeviceReset(ctx: RequestContext): Promise<HandlerResult> {
  await ctx.endpoint.reset('client');
  return { reply: encodeDeviceResetReply(ctx.header.id) };
}

export const deviceHandlers = {
  [VfioUserCommand.DEVICE_GET_INFO]: handleDeviceGetInfo,
  [VfioUserCommand.DEVICE_RESET]: handleDeviceReset,
} as const;
