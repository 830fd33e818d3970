/**
 * DEVICE_GET_IRQ_INFO, and DEVICE_SET_IRQS with libvfio-user's validation
 * (device_set_irqs_validate), all EINVAL; then the endpoint gets the request
 * and the fds (ownership passes). One leniency: NONE|TRIGGER start 0 count 0
 * ("disable") is accepted on an index with zero vectors (a no-op; libvfio-user
 * refuses it).
 */
import { VfioUserError } from '../../../protocol/errors.js';
import type { SetIrqsRequest } from '../../endpoint.js';
import {
  IRQ_INFO_SIZE,
  IrqSetFlag,
  PciIrq,
  SET_IRQS_SIZE,
  VfioUserCommand,
  decodeIrqInfo,
  decodeSetIrqsRequest,
  encodeIrqInfoReply,
  encodeSetIrqsReply,
} from '../../../protocol/index.js';
import type { HandlerResult, RequestContext } from '../context.js';

function handleIrqInfo(ctx: RequestContext): HandlerResult {
  const req = decodeIrqInfo(ctx.message);
  if (req.argsz < IRQ_INFO_SIZE)
    throw VfioUserError.invalid(`DEVICE_GET_IRQ_INFO: argsz ${req.argsz} < ${IRQ_INFO_SIZE}`);
  if (req.index >= ctx.endpoint.numIrqs) {
    throw VfioUserError.invalid(`DEVICE_GET_IRQ_INFO: index ${req.index} >= num_irqs ${ctx.endpoint.numIrqs}`);
  }
  const info = ctx.endpoint.irqInfo(req.index);
  return {
    reply: encodeIrqInfoReply(ctx.header.id, {
      argsz: IRQ_INFO_SIZE,
      flags: info.flags,
      index: req.index,
      count: info.count,
    }),
  };
}

const KNOWN = IrqSetFlag.DATA_TYPE_MASK | IrqSetFlag.ACTION_TYPE_MASK;

function oneBit(v: number): boolean {
  return v !== 0 && (v & (v - 1)) === 0;
}

function handleSetIrqs(ctx: RequestContext): HandlerResult {
  const m = decodeSetIrqsRequest(ctx.message);
  const bad = (why: string): never => {
    throw VfioUserError.invalid(
      `DEVICE_SET_IRQS index ${m.index} flags 0x${m.flags.toString(16)} start ${m.start} count ${m.count}: ${why}`,
    );
  };
  if (m.argsz < SET_IRQS_SIZE) bad(`argsz ${m.argsz} < ${SET_IRQS_SIZE}`);
  if (m.flags & ~KNOWN) bad('unknown flag bits');
  const data = m.flags & IrqSetFlag.DATA_TYPE_MASK;
  const action = m.flags & IrqSetFlag.ACTION_TYPE_MASK;
  if (!oneBit(data) || !oneBit(action)) bad('need exactly one DATA_* and one ACTION_* flag');
  if (m.index >= ctx.endpoint.numIrqs) bad(`index >= num_irqs ${ctx.endpoint.numIrqs}`);
  const nfds = ctx.fds.count;
  if (nfds > 0 && data !== IrqSetFlag.DATA_EVENTFD) bad(`${nfds} fds without DATA_EVENTFD`);
  if (data === IrqSetFlag.DATA_BOOL) {
    if (m.data.byteLength !== m.count) bad(`${m.data.byteLength} bool bytes for count ${m.count}`);
  } else if (m.data.byteLength !== 0) {
    bad(`${m.data.byteLength} unexpected data bytes`);
  }
  if ((m.index === PciIrq.ERR || m.index === PciIrq.REQ) && (action !== IrqSetFlag.ACTION_TRIGGER || m.count > 1)) {
    bad('ERR/REQ take TRIGGER with count <= 1 only');
  }
  const vectors = ctx.endpoint.irqInfo(m.index).count;
  if (m.count === 0) {
    if (m.start !== 0) bad('count 0 needs start 0');
    if (m.flags !== (IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER)) bad('count 0 is only NONE|TRIGGER (disable)');
  } else {
    if (m.start >= vectors || m.start + m.count > vectors) bad(`range past the index's ${vectors} vectors`);
  }
  if (data === IrqSetFlag.DATA_EVENTFD && nfds !== 0 && nfds !== m.count) bad(`${nfds} fds for count ${m.count}`);
  const request: SetIrqsRequest = { flags: m.flags, index: m.index, start: m.start, count: m.count };
  if (data === IrqSetFlag.DATA_BOOL) request.bools = m.data.slice();
  ctx.endpoint.setIrqs(request, ctx.fds.takeAll());
  return { reply: encodeSetIrqsReply(ctx.header.id) };
}

export const irqsHandlers = {
  [VfioUserCommand.DEVICE_GET_IRQ_INFO]: handleIrqInfo,
  [VfioUserCommand.DEVICE_SET_IRQS]: handleSetIrqs,
} as const;
