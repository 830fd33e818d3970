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
 * after negotiation, DIRTY_PAGES, and REGION_WRITE_MULTI when not negotiated).
 */
export function handlerFor(command: number, writeMultiple: boolean): Handler | undefined {
  if (command === 15 && !writeMultiple) return undefined;
  return table.get(command);
}
