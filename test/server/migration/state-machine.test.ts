/**
 * The migration state machine's walks, pair by pair, against the kernel's
 * (vfio_mig_get_next_state): with STOP_COPY|PRE_COPY (what we offer, and
 * libvfio-user's measured walks), with P2P too (the kernel comment's list),
 * and with STOP_COPY alone (arcs touching PRE_COPY are gone).
 */
import { describe, expect, it } from 'vitest';
import { MigrationFlag, MigrationState } from '../../../protocol/features.js';
import { migrationPath, nextMigrationState } from '../../../server/migration/state-machine.js';

const { ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P } = MigrationState;
const NAMES = Object.fromEntries(Object.entries(MigrationState).map(([k, v]) => [v, k])) as Record<number, string>;
const ALL = [ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P];

function walks(flags: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const from of ALL)
    for (const to of ALL) {
      const path = migrationPath(from, to, flags);
      out[`${NAMES[from]}->${NAMES[to]}`] = path === undefined ? 'EINVAL' : path.map((s) => NAMES[s]).join(' ');
    }
  return out;
}

describe('migration state machine', () => {
  it("STOP_COPY|PRE_COPY: exactly libvfio-user's walks (measured), every other change refused", () => {
    const expected: Record<string, string> = {
      'STOP->RUNNING': 'RUNNING',
      'STOP->STOP_COPY': 'STOP_COPY',
      'STOP->RESUMING': 'RESUMING',
      'STOP->PRE_COPY': 'RUNNING PRE_COPY',
      'RUNNING->STOP': 'STOP',
      'RUNNING->STOP_COPY': 'STOP STOP_COPY',
      'RUNNING->RESUMING': 'STOP RESUMING',
      'RUNNING->PRE_COPY': 'PRE_COPY',
      'STOP_COPY->STOP': 'STOP',
      'STOP_COPY->RUNNING': 'STOP RUNNING',
      'STOP_COPY->RESUMING': 'STOP RESUMING',
      'RESUMING->STOP': 'STOP',
      'RESUMING->RUNNING': 'STOP RUNNING',
      'RESUMING->STOP_COPY': 'STOP STOP_COPY',
      'RESUMING->PRE_COPY': 'STOP RUNNING PRE_COPY',
      'PRE_COPY->STOP': 'RUNNING STOP',
      'PRE_COPY->RUNNING': 'RUNNING',
      'PRE_COPY->STOP_COPY': 'STOP_COPY',
      'PRE_COPY->RESUMING': 'RUNNING STOP RESUMING',
    };
    const got = walks(MigrationFlag.STOP_COPY | MigrationFlag.PRE_COPY);
    for (const s of [STOP, RUNNING, STOP_COPY, RESUMING, PRE_COPY]) expected[`${NAMES[s]}->${NAMES[s]}`] = '';
    for (const key of Object.keys(got)) expected[key] ??= 'EINVAL';
    expect(got).toEqual(expected);
  });

  it("with P2P: the kernel's multi-step walks", () => {
    const all = MigrationFlag.STOP_COPY | MigrationFlag.P2P | MigrationFlag.PRE_COPY;
    const got = walks(all);
    // The kernel comment's list of combination transitions.
    expect(got).toMatchObject({
      'PRE_COPY->STOP_COPY': 'PRE_COPY_P2P STOP_COPY',
      'PRE_COPY->RUNNING_P2P': 'RUNNING RUNNING_P2P',
      'PRE_COPY->STOP': 'RUNNING RUNNING_P2P STOP',
      'PRE_COPY->RESUMING': 'RUNNING RUNNING_P2P STOP RESUMING',
      'PRE_COPY_P2P->RUNNING': 'RUNNING_P2P RUNNING',
      'PRE_COPY_P2P->STOP': 'RUNNING_P2P STOP',
      'PRE_COPY_P2P->RESUMING': 'RUNNING_P2P STOP RESUMING',
      'RESUMING->RUNNING_P2P': 'STOP RUNNING_P2P',
      'RESUMING->PRE_COPY_P2P': 'STOP RUNNING_P2P PRE_COPY_P2P',
      'RESUMING->RUNNING': 'STOP RUNNING_P2P RUNNING',
      'RESUMING->PRE_COPY': 'STOP RUNNING_P2P RUNNING PRE_COPY',
      'RESUMING->STOP_COPY': 'STOP STOP_COPY',
      'RUNNING->PRE_COPY_P2P': 'RUNNING_P2P PRE_COPY_P2P',
      'RUNNING->STOP': 'RUNNING_P2P STOP',
      'RUNNING->RESUMING': 'RUNNING_P2P STOP RESUMING',
      'RUNNING->STOP_COPY': 'RUNNING_P2P STOP STOP_COPY',
      'RUNNING_P2P->PRE_COPY': 'RUNNING PRE_COPY',
      'RUNNING_P2P->RESUMING': 'STOP RESUMING',
      'RUNNING_P2P->STOP_COPY': 'STOP STOP_COPY',
      'STOP->PRE_COPY_P2P': 'RUNNING_P2P PRE_COPY_P2P',
      'STOP->RUNNING': 'RUNNING_P2P RUNNING',
      'STOP->PRE_COPY': 'RUNNING_P2P RUNNING PRE_COPY',
      'STOP_COPY->RESUMING': 'STOP RESUMING',
      'STOP_COPY->RUNNING_P2P': 'STOP RUNNING_P2P',
      'STOP_COPY->RUNNING': 'STOP RUNNING_P2P RUNNING',
      'STOP_COPY->PRE_COPY': 'EINVAL',
      'STOP_COPY->PRE_COPY_P2P': 'EINVAL',
    });
    for (const s of ALL) {
      expect(got[`ERROR->${NAMES[s]}`]).toBe('EINVAL');
      expect(got[`${NAMES[s]}->ERROR`]).toBe('EINVAL');
    }
  });

  it('STOP_COPY alone: no way into or out of PRE_COPY, RUNNING <-> STOP direct', () => {
    const got = walks(MigrationFlag.STOP_COPY);
    expect(got['RUNNING->PRE_COPY']).toBe('EINVAL');
    expect(got['PRE_COPY->RUNNING']).toBe('EINVAL');
    expect(got['RUNNING->STOP_COPY']).toBe('STOP STOP_COPY');
    expect(got['RUNNING->RUNNING_P2P']).toBe('EINVAL');
  });

  it('a state number outside the enum is refused', () => {
    expect(nextMigrationState(RUNNING, 8, MigrationFlag.STOP_COPY)).toBeUndefined();
    expect(nextMigrationState(RUNNING, 0xabcd, MigrationFlag.STOP_COPY)).toBeUndefined();
    expect(nextMigrationState(RUNNING, -1, MigrationFlag.STOP_COPY)).toBeUndefined();
  });
});
