/**
 * MIG_DATA_READ and MIG_DATA_WRITE, checked as libvfio-user's
 * handle_mig_data_read / handle_mig_data_write do (all EINVAL): a device that
 * cannot migrate; a payload shorter than 8 bytes (READ: any other length);
 * `size` above the client's max_data_xfer_size (the size bounds what the
 * client receives, so it is the client's limit that counts); argsz < 8 + size;
 * WRITE data not exactly `size` bytes; the wrong migration state (READ only in
 * PRE_COPY/STOP_COPY, WRITE only in RESUMING: the endpoint's check).
 *
 * A READ reply carries `size` bytes of data, fewer at the end of the data
 * (none once it is all read), and is zero-padded to the size asked for, as
 * libvfio-user's is: its sample client reads exactly 8 + the size it asked
 * for whatever the reply says.
 */
import { VfioUserError } from '../../../protocol/errors.js';
import {
  MIG_DATA_SIZE,
  VfioUserCommand,
  decodeMigDataReadRequest,
  decodeMigDataWriteRequest,
  encodeEmptyReply,
  encodeMigDataReadReply,
  type MigDataMessage,
} from '../../../protocol/index.js';
import type { MigrationEndpoint } from '../../endpoint.js';
import type { HandlerResult, RequestContext } from '../context.js';

function checkSize(ctx: RequestContext, what: string, argsz: number, size: number): MigrationEndpoint {
  const migration = ctx.endpoint.migration;
  if (!migration) throw VfioUserError.invalid(`${what}: the device cannot migrate`);
  if (size > ctx.clientMaxDataXferSize)
    throw VfioUserError.invalid(`${what}: size ${size} > the client's max_data_xfer_size ${ctx.clientMaxDataXferSize}`);
  if (argsz < MIG_DATA_SIZE + size) throw VfioUserError.invalid(`${what}: argsz ${argsz} < 8 + size ${size}`);
  return migration;
}

async function handleMigDataRead(ctx: RequestContext): Promise<HandlerResult> {
  const { argsz, size } = decodeMigDataReadRequest(ctx.message);
  const migration = checkSize(ctx, 'MIG_DATA_READ', argsz, size);
  const data = await migration.readData(size);
  return { reply: encodeMigDataReadReply(ctx.header.id, data, size) };
}

async function handleMigDataWrite(ctx: RequestContext): Promise<HandlerResult> {
  const m: MigDataMessage = decodeMigDataWriteRequest(ctx.message);
  const migration = checkSize(ctx, 'MIG_DATA_WRITE', m.argsz, m.size);
  await migration.writeData(m.data);
  return { reply: encodeEmptyReply(ctx.header.id, VfioUserCommand.MIG_DATA_WRITE) };
}

export const migrationHandlers = {
  [VfioUserCommand.MIG_DATA_READ]: handleMigDataRead,
  [VfioUserCommand.MIG_DATA_WRITE]: handleMigDataWrite,
} as const;
