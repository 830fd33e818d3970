/** Whole-device commands: DEVICE_GET_INFO, DEVICE_RESET and DEVICE_FEATURE. */
import { VfioUserCommand, HEADER_SIZE, HeaderFlag } from '../protocol/constants.js';
import { newMessage } from '../protocol/header.js';
import { decodeDeviceInfo, encodeDeviceInfoRequest, type DeviceInfoMessage } from '../protocol/device.js';
import { closeFds, type RequestChannel } from './request-channel.js';

/** VfioUserClient.getDeviceInfo. */
export async function getDeviceInfo(ch: RequestChannel, argsz?: number): Promise<DeviceInfoMessage> {
  const r = await ch.typed(VfioUserCommand.DEVICE_GET_INFO, (id) => encodeDeviceInfoRequest(id, argsz));
  return decodeDeviceInfo(r.message);
}

/** VfioUserClient.reset. */
export async function reset(ch: RequestChannel): Promise<void> {
  const r = await ch.typed(
    VfioUserCommand.DEVICE_RESET,
    (id) => newMessage(id, VfioUserCommand.DEVICE_RESET, HeaderFlag.TYPE_COMMAND, 0).bytes,
  );
  closeFds(r.fds);
}

/** VfioUserClient.deviceFeature: argsz u32, flags u32 (feature | GET/SET/PROBE), data; resolves with the reply payload. */
export async function deviceFeature(
  ch: RequestChannel,
  flags: number,
  data: Uint8Array,
  argsz: number,
): Promise<Uint8Array> {
  const payload = new Uint8Array(8 + data.byteLength);
  const dv = new DataView(payload.buffer);
  dv.setUint32(0, argsz, true);
  dv.setUint32(4, flags, true);
  payload.set(data, 8);
  const r = (await ch.request(VfioUserCommand.DEVICE_FEATURE, payload, {}))!;
  closeFds(r.fds);
  return r.message.subarray(HEADER_SIZE);
}
