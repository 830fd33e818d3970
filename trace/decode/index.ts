/**
 * Every command's request and reply decoders, one file per command group
 * (the same groups as protocol/). Lenient by design: a decoder writes fields
 * as it reads them, and a message too short or otherwise malformed keeps the
 * fields read so far, gains `malformed` (why) and `payload` (its first bytes).
 * Nothing a client sends can make these throw.
 */
import { HEADER_SIZE, VfioUserCommand as C } from '../../protocol/constants.js';
import { dataHex, type TraceFields } from '../fields.js';
import { payload } from './bytes.js';
import { traceDeviceInfoReply, traceDeviceInfoRequest } from './device.js';
import { traceDmaAccess, traceDmaData } from './dma-access.js';
import { traceDmaMapRequest, traceDmaUnmap } from './dma.js';
import { traceFeatureReply, traceFeatureRequest } from './features.js';
import { traceIrqInfoReply, traceIrqInfoRequest, traceSetIrqsRequest } from './irqs.js';
import { traceMigData, traceMigDataRequest } from './migration.js';
import { traceRegionAccess, traceRegionData, traceWriteMultiReply, traceWriteMultiRequest } from './region-access.js';
import {
  traceRegionInfoReply,
  traceRegionInfoRequest,
  traceRegionIoFdsReply,
  traceRegionIoFdsRequest,
} from './regions.js';
import { traceVersion } from './version.js';

type Decoder = (msg: Uint8Array, out: TraceFields) => void;

/** A header-only message: nothing to decode, but a payload is worth a note. */
const headerOnly: Decoder = (msg, out) => {
  if (msg.byteLength > HEADER_SIZE) out.extraBytes = msg.byteLength - HEADER_SIZE;
};

/** [request decoder, reply decoder] per command. */
const DECODERS: Record<number, readonly [Decoder, Decoder]> = {
  [C.VERSION]: [traceVersion, traceVersion],
  [C.DMA_MAP]: [traceDmaMapRequest, headerOnly],
  [C.DMA_UNMAP]: [traceDmaUnmap, traceDmaUnmap],
  [C.DEVICE_GET_INFO]: [traceDeviceInfoRequest, traceDeviceInfoReply],
  [C.DEVICE_GET_REGION_INFO]: [traceRegionInfoRequest, traceRegionInfoReply],
  [C.DEVICE_GET_REGION_IO_FDS]: [traceRegionIoFdsRequest, traceRegionIoFdsReply],
  [C.DEVICE_GET_IRQ_INFO]: [traceIrqInfoRequest, traceIrqInfoReply],
  [C.DEVICE_SET_IRQS]: [traceSetIrqsRequest, headerOnly],
  [C.REGION_READ]: [traceRegionAccess, traceRegionData],
  [C.REGION_WRITE]: [traceRegionData, traceRegionAccess],
  [C.DMA_READ]: [traceDmaAccess, traceDmaData],
  [C.DMA_WRITE]: [traceDmaData, traceDmaAccess],
  [C.DEVICE_RESET]: [headerOnly, headerOnly],
  [C.REGION_WRITE_MULTI]: [traceWriteMultiRequest, traceWriteMultiReply],
  [C.DEVICE_FEATURE]: [traceFeatureRequest, traceFeatureReply],
  [C.MIG_DATA_READ]: [traceMigDataRequest, traceMigData],
  [C.MIG_DATA_WRITE]: [traceMigData, headerOnly],
};

/** A command we do not decode (DIRTY_PAGES, unknown numbers): its payload's first bytes. */
const opaque: Decoder = (msg, out) => {
  const p = payload(msg);
  if (p.byteLength > 0) out.payload = dataHex(p);
};

function run(decode: Decoder, msg: Uint8Array): TraceFields {
  const out: TraceFields = {};
  try {
    decode(msg, out);
  } catch (err) {
    out.malformed = err instanceof Error ? err.message : String(err);
    const p = payload(msg);
    if (p.byteLength > 0) out.payload = dataHex(p);
  }
  return out;
}

/** The fields of a request (a command message) of `command`. Never throws. */
export function decodeRequest(command: number, msg: Uint8Array): TraceFields {
  return run(DECODERS[command]?.[0] ?? opaque, msg);
}

/** The fields of a successful reply to `command` (an error reply has none: its errno says it all). Never throws. */
export function decodeReply(command: number, msg: Uint8Array): TraceFields {
  return run(DECODERS[command]?.[1] ?? opaque, msg);
}
