/** DEVICE_RESET (13): header-only request and reply. */
import { Command } from './constants.js';
import { encodeEmptyReply, encodeEmptyRequest } from './header.js';

export function encodeDeviceResetRequest(id: number, noReply = false): Uint8Array {
  return encodeEmptyRequest(id, Command.DEVICE_RESET, noReply);
}

export function encodeDeviceResetReply(id: number): Uint8Array {
  return encodeEmptyReply(id, Command.DEVICE_RESET);
}
