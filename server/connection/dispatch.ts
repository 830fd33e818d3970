/** Command number -> handler for every command a client may send after VERSION. */
import { VfioUserError } from '../../protocol/errors.js';
import { commandName } from '../../protocol/constants.js';
import { migrationStateName } from '../../protocol/features.js';
import { commandAllowedIn } from '../migration/command-gate.js';
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
  for (const [cmd, handler] of Object.entries(group)) table.set(Number(cmd), gated(Number(cmd), handler));
}

/**
 * `handler`, refused with EINVAL while the device's migration state does not
 * serve `command` (a stopped device takes no DMA_MAP, SET_IRQS...: see
 * server/migration/command-gate.ts).
 */
function gated(command: number, handler: Handler): Handler {
  return (ctx) => {
    const migration = ctx.endpoint.migration;
    if (migration !== undefined && !commandAllowedIn(migration.state, command)) {
      throw VfioUserError.invalid(
        `${commandName(command)} is not served in migration state ${migrationStateName(migration.state)}`,
      );
    }
    return handler(ctx);
  };
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
