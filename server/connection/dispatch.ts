/** Command number -> handler for every command a client may send after VERSION. */
import type { Handler } from './context.js';
import { deviceHandlers } from './handlers/device.js';
import { dmaHandlers } from './handlers/dma.js';
import { featuresHandlers } from './handlers/features.js';
import { irqsHandlers } from './handlers/irqs.js';
import { migrationHandlers } from './handlers/migration.js';
import { regionAccessHandlers } from './handlers/region-access.js';
import { regionsHandlers } from './handlers/regions.js';

const table = new Map<number, Handler>();
for (const group of [
  dmaHandlers,
  deviceHandlers,
  regionsHandlers,
  regionAccessHandlers,
  irqsHandlers,
  featuresHandlers,
  migrationHandlers,
]) {
  for (const [cmd, handler] of Object.entries(group)) table.set(Number(cmd), handler);
}

/**
 * The handler for `command`, or undefined (EINVAL: unknown commands, VERSION
 * after negotiation (handlers/version.ts runs before), DIRTY_PAGES, DMA_READ and
 * DMA_WRITE (server-to-client only)). REGION_WRITE_MULTI is served whether or not
 * write_multiple was advertised: QEMU with `x-send-queued=on` sends it anyway,
 * with NO_REPLY, so refusing it would silently drop guest writes.
 */
export function handlerFor(command: number): Handler | undefined {
  return table.get(command);
}
