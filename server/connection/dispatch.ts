/** Command number -> handler for every command a client may send after VERSION. */
import type { Handler } from './context.js';
import { deviceHandlers } from './device-handlers.js';
import { dmaHandlers } from './dma-handlers.js';
import { irqHandlers } from './irq-handlers.js';
import { miscHandlers } from './misc-handlers.js';
import { regionHandlers } from './region-handlers.js';

const table = new Map<number, Handler>();
for (const group of [deviceHandlers, dmaHandlers, irqHandlers, miscHandlers, regionHandlers]) {
  for (const [cmd, handler] of Object.entries(group)) table.set(Number(cmd), handler as Handler);
}

/**
 * The handler for `command`, or undefined (EINVAL: unknown commands, VERSION
 * after negotiation, DIRTY_PAGES). REGION_WRITE_MULTI is served whether or not
 * write_multiple was advertised: QEMU with `x-send-queued=on` sends it anyway,
 * with NO_REPLY, so refusing it would silently drop guest writes.
 */
export function handlerFor(command: number): Handler | undefined {
  return table.get(command);
}
