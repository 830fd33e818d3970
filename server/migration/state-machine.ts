/**
 * The migration v2 state machine's arcs, as the kernel defines them
 * (drivers/vfio/vfio_main.c, vfio_mig_get_next_state; the vfio-user spec
 * takes the same arcs): from a state, towards a target, which single arc to
 * take next. A change between two states is walked one arc at a time; states
 * the device does not support (by its MigrationFlag bits) are skipped by
 * looking up again from them, so the device only ever sees arcs between
 * states it supports, and the walk never passes through a saving state
 * (PRE_COPY*, STOP_COPY) on the way elsewhere.
 */
import { MigrationFlag, MigrationState } from '../../protocol/features.js';

const { ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P } = MigrationState;

/** Number of states (0..7). */
const STATES = 8;

/**
 * NEXT[from][to]: the state to step to from `from` on the way to `to`
 * (ERROR: no way). The kernel's table, row by row.
 */
const NEXT: readonly (readonly number[])[] = (() => {
  const t: number[][] = Array.from({ length: STATES }, () => new Array<number>(STATES).fill(ERROR));
  const row = (from: number, steps: Partial<Record<number, number>>): void => {
    for (const [to, next] of Object.entries(steps)) t[from]![Number(to)] = next!;
  };
  row(STOP, {
    [STOP]: STOP,
    [RUNNING]: RUNNING_P2P,
    [PRE_COPY]: RUNNING_P2P,
    [PRE_COPY_P2P]: RUNNING_P2P,
    [STOP_COPY]: STOP_COPY,
    [RESUMING]: RESUMING,
    [RUNNING_P2P]: RUNNING_P2P,
  });
  row(RUNNING, {
    [STOP]: RUNNING_P2P,
    [RUNNING]: RUNNING,
    [PRE_COPY]: PRE_COPY,
    [PRE_COPY_P2P]: RUNNING_P2P,
    [STOP_COPY]: RUNNING_P2P,
    [RESUMING]: RUNNING_P2P,
    [RUNNING_P2P]: RUNNING_P2P,
  });
  row(PRE_COPY, {
    [STOP]: RUNNING,
    [RUNNING]: RUNNING,
    [PRE_COPY]: PRE_COPY,
    [PRE_COPY_P2P]: PRE_COPY_P2P,
    [STOP_COPY]: PRE_COPY_P2P,
    [RESUMING]: RUNNING,
    [RUNNING_P2P]: RUNNING,
  });
  row(PRE_COPY_P2P, {
    [STOP]: RUNNING_P2P,
    [RUNNING]: RUNNING_P2P,
    [PRE_COPY]: PRE_COPY,
    [PRE_COPY_P2P]: PRE_COPY_P2P,
    [STOP_COPY]: STOP_COPY,
    [RESUMING]: RUNNING_P2P,
    [RUNNING_P2P]: RUNNING_P2P,
  });
  // STOP_COPY -> PRE_COPY / PRE_COPY_P2P stay ERROR: explicitly blocked.
  row(STOP_COPY, {
    [STOP]: STOP,
    [RUNNING]: STOP,
    [STOP_COPY]: STOP_COPY,
    [RESUMING]: STOP,
    [RUNNING_P2P]: STOP,
  });
  row(RESUMING, {
    [STOP]: STOP,
    [RUNNING]: STOP,
    [PRE_COPY]: STOP,
    [PRE_COPY_P2P]: STOP,
    [STOP_COPY]: STOP,
    [RESUMING]: RESUMING,
    [RUNNING_P2P]: STOP,
  });
  row(RUNNING_P2P, {
    [STOP]: STOP,
    [RUNNING]: RUNNING,
    [PRE_COPY]: RUNNING,
    [PRE_COPY_P2P]: PRE_COPY_P2P,
    [STOP_COPY]: STOP,
    [RESUMING]: STOP,
    [RUNNING_P2P]: RUNNING_P2P,
  });
  // From ERROR every target is ERROR: only a device reset leaves it.
  return t;
})();

/** The MigrationFlag bits a device needs for a state to exist (the kernel's state_flags_table; ERROR: never reachable). */
const REQUIRED: readonly number[] = (() => {
  const r = new Array<number>(STATES).fill(MigrationFlag.STOP_COPY);
  r[PRE_COPY] = MigrationFlag.STOP_COPY | MigrationFlag.PRE_COPY;
  r[PRE_COPY_P2P] = MigrationFlag.STOP_COPY | MigrationFlag.P2P | MigrationFlag.PRE_COPY;
  r[RUNNING_P2P] = MigrationFlag.STOP_COPY | MigrationFlag.P2P;
  r[ERROR] = 0xffffffff;
  return r;
})();

/** Whether a device with `flags` has state `state` (ERROR never counts: it cannot be asked for). */
function isSupportedState(state: number, flags: number): boolean {
  return Number.isInteger(state) && state >= 0 && state < STATES && (REQUIRED[state]! & flags) === REQUIRED[state];
}

/**
 * The next arc from `from` towards `to` for a device with `flags`, skipping
 * unsupported states; undefined when the change is not allowed (a target
 * that is not a supported state, ERROR, from ERROR, STOP_COPY -> PRE_COPY).
 */
export function nextMigrationState(from: number, to: number, flags: number): number | undefined {
  if (!isSupportedState(from, flags) || !isSupportedState(to, flags)) return undefined;
  let next = NEXT[from]![to]!;
  while (next !== ERROR && !isSupportedState(next, flags)) next = NEXT[next]![to]!;
  return next === ERROR ? undefined : next;
}

/**
 * Every state a change from `from` to `to` passes through, `to` last (empty
 * when from === to, a supported state); undefined when it is not allowed.
 */
export function migrationPath(from: number, to: number, flags: number): number[] | undefined {
  if (!isSupportedState(from, flags) || !isSupportedState(to, flags)) return undefined;
  const path: number[] = [];
  let at = from;
  while (at !== to) {
    const next = nextMigrationState(at, to, flags);
    if (next === undefined || path.length >= STATES) return undefined;
    path.push(next);
    at = next;
  }
  return path;
}

/** Whether the device runs in `state` (it may do DMA and raise interrupts): RUNNING, PRE_COPY and their P2P forms. */
export function isRunningState(state: number): boolean {
  return state === RUNNING || state === RUNNING_P2P || state === PRE_COPY || state === PRE_COPY_P2P;
}

/** Whether `state` is a saving state (MIG_DATA_READ works): PRE_COPY, PRE_COPY_P2P, STOP_COPY. */
export function isSavingState(state: number): boolean {
  return state === PRE_COPY || state === PRE_COPY_P2P || state === STOP_COPY;
}
