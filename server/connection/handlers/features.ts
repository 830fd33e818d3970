/**
 * DEVICE_FEATURE: migration v2's features, checked the way libvfio-user's
 * handle_device_feature does (every failure EINVAL unless noted):
 *
 * 1. payload < 8 bytes (the decoder); the device cannot migrate (no
 *    Endpoint.migration: every request, as libvfio-user without migration
 *    callbacks);
 * 2. flag bits outside feature|GET|SET|PROBE, an unknown feature, or an
 *    operation the feature does not have (MIGRATION: GET; MIG_DEVICE_STATE:
 *    GET, SET; LOGGING_START/STOP: SET; LOGGING_REPORT: GET; PROBE on all);
 * 3. PROBE: argsz < the payload -> EINVAL, else the request echoed (success
 *    means every operation named is supported);
 * 4. neither GET nor SET, or both without PROBE;
 * 5. GET: argsz too small for the reply; SET: argsz < the payload; then the
 *    feature's own checks (the endpoint's errno).
 *
 * Replies: SET echoes the request's payload (a success only: an error reply
 * is the header alone, as the spec says; libvfio-user adds the echo to some
 * error replies). GET returns argsz = 8 + the data, the request's flags and
 * the data. Short data for MIG_DEVICE_STATE SET, LOGGING_START and
 * LOGGING_REPORT is EINVAL (libvfio-user reads past the message there).
 */
import { VfioUserError } from '../../../protocol/errors.js';
import {
  DEVICE_FEATURE_SIZE,
  DMA_LOGGING_REPORT_SIZE,
  DeviceFeature,
  DeviceFeatureFlag,
  Errno,
  VfioUserCommand,
  decodeDeviceFeature,
  decodeDmaLoggingControl,
  decodeDmaLoggingReport,
  decodeMigDeviceStateData,
  dirtyBitmapBytes,
  encodeDeviceFeatureReply,
  encodeMigDeviceStateData,
  encodeMigrationFeatureData,
  migrationStateName,
  type DeviceFeatureMessage,
} from '../../../protocol/index.js';
import type { MigrationEndpoint } from '../../endpoint.js';
import type { HandlerResult, RequestContext } from '../context.js';

const { GET, SET, PROBE } = DeviceFeatureFlag;
const OPS = GET | SET | PROBE;

/** The operations each feature has. */
const SUPPORTED = new Map<number, number>([
  [DeviceFeature.MIGRATION, GET | PROBE],
  [DeviceFeature.MIG_DEVICE_STATE, GET | SET | PROBE],
  [DeviceFeature.DMA_LOGGING_START, SET | PROBE],
  [DeviceFeature.DMA_LOGGING_STOP, SET | PROBE],
  [DeviceFeature.DMA_LOGGING_REPORT, GET | PROBE],
]);

/** Bytes of a MIGRATION or MIG_DEVICE_STATE GET reply payload (argsz, flags, 8 data bytes). */
const SMALL_GET_REPLY = DEVICE_FEATURE_SIZE + 8;

function fail(f: DeviceFeatureMessage, why: string, errno: number = Errno.EINVAL): never {
  throw new VfioUserError(errno, `DEVICE_FEATURE 0x${f.flags.toString(16)} argsz ${f.argsz}: ${why}`);
}

async function handleDeviceFeature(ctx: RequestContext): Promise<HandlerResult> {
  const f = decodeDeviceFeature(ctx.message);
  const migration = ctx.endpoint.migration;
  if (!migration) fail(f, 'the device cannot migrate (no device features)');
  const feature = f.flags & DeviceFeatureFlag.MASK;
  const ops = f.flags & OPS;
  const supported = SUPPORTED.get(feature);
  if (f.flags & ~(DeviceFeatureFlag.MASK | OPS)) fail(f, 'unknown flag bits');
  if (supported === undefined) fail(f, `unknown feature ${feature}`);
  if ((ops & ~supported) !== 0) fail(f, `operation not supported by feature ${feature}`);
  const payloadLength = DEVICE_FEATURE_SIZE + f.data.byteLength;
  const echo = (): HandlerResult => ({
    reply: encodeDeviceFeatureReply(ctx.header.id, f.flags, f.data, f.argsz),
  });
  if (ops & PROBE) {
    if (f.argsz < payloadLength) fail(f, `PROBE with argsz < the payload's ${payloadLength} bytes`);
    return echo();
  }
  if (ops === GET) return get(ctx, migration, f, feature);
  if (ops !== SET) fail(f, 'needs exactly one of GET and SET (or PROBE)');
  if (f.argsz < payloadLength) fail(f, `SET with argsz < the payload's ${payloadLength} bytes`);
  switch (feature) {
    case DeviceFeature.MIG_DEVICE_STATE: {
      const { deviceState } = decodeMigDeviceStateData(f.data);
      ctx.log.debug(
        { from: migrationStateName(migration.state), to: migrationStateName(deviceState) },
        'MIG_DEVICE_STATE',
      );
      await migration.setState(deviceState);
      return echo();
    }
    case DeviceFeature.DMA_LOGGING_START: {
      const control = decodeDmaLoggingControl(f.data);
      if (control.pageSize === 0n) fail(f, 'DMA_LOGGING_START: page size 0');
      migration.startDirtyLogging(control.pageSize, control.ranges);
      return echo();
    }
    default:
      migration.stopDirtyLogging();
      return echo();
  }
}

function get(
  ctx: RequestContext,
  migration: MigrationEndpoint,
  f: DeviceFeatureMessage,
  feature: number,
): HandlerResult {
  const reply = (data: Uint8Array): HandlerResult => ({
    reply: encodeDeviceFeatureReply(ctx.header.id, f.flags, data),
  });
  switch (feature) {
    case DeviceFeature.MIGRATION:
      if (f.argsz < SMALL_GET_REPLY) fail(f, `GET MIGRATION needs argsz >= ${SMALL_GET_REPLY}`);
      return reply(encodeMigrationFeatureData(migration.flags));
    case DeviceFeature.MIG_DEVICE_STATE:
      if (f.argsz < SMALL_GET_REPLY) fail(f, `GET MIG_DEVICE_STATE needs argsz >= ${SMALL_GET_REPLY}`);
      return reply(encodeMigDeviceStateData({ deviceState: migration.state, dataFd: 0 }));
    default: {
      // DMA_LOGGING_REPORT (libvfio-user's order: page size and length, then argsz, then the endpoint's checks).
      const r = decodeDmaLoggingReport(f.data);
      if (r.pageSize === 0n || (r.pageSize & (r.pageSize - 1n)) !== 0n)
        fail(f, `DMA_LOGGING_REPORT: page size ${r.pageSize} is not a power of two`);
      if (r.length < r.pageSize) fail(f, `DMA_LOGGING_REPORT: length ${r.length} < page size ${r.pageSize}`);
      const bitmap = dirtyBitmapBytes(r.length, r.pageSize);
      const need = BigInt(DEVICE_FEATURE_SIZE + DMA_LOGGING_REPORT_SIZE) + bitmap;
      if (BigInt(f.argsz) < need) fail(f, `DMA_LOGGING_REPORT: argsz < ${need} for its bitmap`);
      const bits = migration.reportDirty(r.iova, r.length, r.pageSize);
      const data = new Uint8Array(DMA_LOGGING_REPORT_SIZE + bits.byteLength);
      data.set(f.data.subarray(0, DMA_LOGGING_REPORT_SIZE));
      data.set(bits, DMA_LOGGING_REPORT_SIZE);
      return reply(data);
    }
  }
}

export const featuresHandlers = { [VfioUserCommand.DEVICE_FEATURE]: handleDeviceFeature } as const;
