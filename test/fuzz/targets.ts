/** The guest fuzz targets by name (`npm run fuzz -- --target NAME`). */
import type { Action, FuzzTarget } from './target.js';
import { gpioTarget } from './gpio-target.js';
import { nvmeTarget } from './nvme-target.js';

export const guestTargets: Record<string, FuzzTarget<Action> | undefined> = {
  nvme: nvmeTarget,
  gpio: gpioTarget,
};
