/**
 * Interrupts: DEVICE_GET_IRQ_INFO and DEVICE_SET_IRQS, as given or with the
 * client's own eventfds (IrqSinks) installed in chunks of max_msg_fds.
 */
import { VfioUserCommand, IrqSetFlag } from '../protocol/constants.js';
import { decodeIrqInfo, encodeIrqInfoRequest, encodeSetIrqsRequest, type IrqInfoMessage } from '../protocol/irqs.js';
import type { IrqSinks } from './irq-sinks.js';
import { closeFds, type RequestChannel } from './request-channel.js';

export interface SetIrqsOptions {
  /** IrqSetFlag bits: one DATA_* and one ACTION_*. */
  flags: number;
  index: number;
  start?: number;
  count: number;
  /** DATA_BOOL bytes. */
  data?: Uint8Array;
  /** DATA_EVENTFD fds (borrowed). */
  fds?: readonly number[];
  /** Override the argsz field. */
  argsz?: number;
}

/** VfioUserClient.getIrqInfo. */
export async function getIrqInfo(ch: RequestChannel, index: number, argsz?: number): Promise<IrqInfoMessage> {
  const r = await ch.typed(VfioUserCommand.DEVICE_GET_IRQ_INFO, (id) => encodeIrqInfoRequest(id, index, argsz));
  return decodeIrqInfo(r.message);
}

/** VfioUserClient.setIrqs: one SET_IRQS as given. */
export async function setIrqs(ch: RequestChannel, o: SetIrqsOptions): Promise<void> {
  const bytes = (id: number) =>
    encodeSetIrqsRequest(id, {
      flags: o.flags,
      index: o.index,
      start: o.start ?? 0,
      count: o.count,
      data: o.data,
      argsz: o.argsz,
    });
  const r = await ch.typed(VfioUserCommand.DEVICE_SET_IRQS, bytes, o.fds);
  closeFds(r.fds);
}

/** VfioUserClient.enableIrqs: fresh eventfds for [start, start+count) of `index`, sent `maxMsgFds` at a time; removed again on failure. */
export async function enableIrqs(
  ch: RequestChannel,
  sinks: IrqSinks,
  maxMsgFds: number,
  index: number,
  count: number,
  start: number,
): Promise<void> {
  const fds = sinks.create(index, start, count);
  const chunk = Math.max(1, maxMsgFds);
  try {
    for (let i = 0; i < fds.length; i += chunk) {
      const part = fds.slice(i, i + chunk);
      await setIrqs(ch, {
        flags: IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER,
        index,
        start: start + i,
        count: part.length,
        fds: part,
      });
    }
  } catch (err) {
    sinks.remove(index, start, count);
    throw err;
  }
}

/** VfioUserClient.disableIrqs: SET_IRQS(NONE|TRIGGER, count 0), then the index's eventfds are closed (even if it fails). */
export async function disableIrqs(ch: RequestChannel, sinks: IrqSinks, index: number): Promise<void> {
  try {
    await setIrqs(ch, { flags: IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, index, start: 0, count: 0 });
  } finally {
    sinks.remove(index);
  }
}
