/**
 * 'vfio-user-ts/trace': the protocol trace. Decoders for every vfio-user
 * request and reply (one file per command group under decode/), trace records
 * and their one-line form, ProtocolTracer (a ConnectionObserver for serve()'s
 * `observer`), and capture files (`serve --trace-file`): CaptureWriter,
 * readCapture, and the filters of `vfio-user-ts trace`.
 * Depends on protocol/ only; server/ logs through it, cli/ captures with it.
 */
export { decodeReply, decodeRequest } from './decode/index.js';
export { formatFields, type TraceFields, type TraceValue } from './fields.js';
export { errnoName, irqName, regionName } from './names.js';
export {
  formatRecord,
  type DmaRecord,
  type MessageRecord,
  type StateRecord,
  type TraceRecord,
  type TracedDmaRequest,
  type TracedMessage,
  type TracedState,
} from './record.js';
export { logTracer, ProtocolTracer, type TracerOptions } from './tracer.js';
export {
  CaptureWriter,
  readCapture,
  CAPTURE_FORMAT,
  CAPTURE_VERSION,
  type CaptureEnd,
  type CaptureHeader,
  type CaptureLine,
} from './capture.js';
export { commandByName, matches, regionByName, type TraceFilter } from './filter.js';
