/**
 * Which commands a device serves in each migration state. While the device is
 * stopped it must not change, so libvfio-user (lib/libvfio-user.c,
 * should_exec_command) serves only region accesses, DEVICE_FEATURE and
 * MIG_DATA_READ in STOP, and only the last two in STOP_COPY; everything else
 * is EINVAL there (DMA_MAP/UNMAP, SET_IRQS, GET_INFO, DEVICE_RESET, ...).
 * We answer the same. ERROR (which libvfio-user never enters) is STOP plus
 * DEVICE_RESET, the one way out of it. RUNNING, PRE_COPY (and their P2P
 * forms) and RESUMING gate nothing.
 */
import { VfioUserCommand } from '../../protocol/constants.js';
import { MigrationState } from '../../protocol/features.js';

const REGION_ACCESS = [VfioUserCommand.REGION_READ, VfioUserCommand.REGION_WRITE, VfioUserCommand.REGION_WRITE_MULTI];

const ALLOWED = new Map<number, ReadonlySet<number>>([
  [MigrationState.STOP, new Set([...REGION_ACCESS, VfioUserCommand.DEVICE_FEATURE, VfioUserCommand.MIG_DATA_READ])],
  [MigrationState.STOP_COPY, new Set([VfioUserCommand.DEVICE_FEATURE, VfioUserCommand.MIG_DATA_READ])],
  [
    MigrationState.ERROR,
    new Set([
      ...REGION_ACCESS,
      VfioUserCommand.DEVICE_FEATURE,
      VfioUserCommand.MIG_DATA_READ,
      VfioUserCommand.DEVICE_RESET,
    ]),
  ],
]);

/** Whether `command` is served while the device is in migration state `state`. */
export function commandAllowedIn(state: number, command: number): boolean {
  const allowed = ALLOWED.get(state);
  return allowed === undefined || allowed.has(command);
}
