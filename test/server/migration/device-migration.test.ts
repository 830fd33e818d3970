/**
 * A device's side of migration: when its quiesce and resume run (once per
 * stop, once per run, a reset of a stopped device resumes it), and what a
 * failing step does (the walk goes back to where it started; if that fails
 * too the state is ERROR, where only DEVICE_RESET is served, and it recovers).
 */
import { describe, expect, it } from 'vitest';
import { Errno, VfioUserCommand } from '../../../protocol/constants.js';
import { MigrationState } from '../../../protocol/features.js';
import { PciDevice } from '../../../server/pci/index.js';
import { Field } from '../../../server/state/fields.js';
import { defineDeviceState } from '../../../server/state/device-state.js';
import { expectErrno, expectErrorReply, fields, rawRequest, startDevice } from '../../helpers/harness.js';

const S = MigrationState;

interface Probe {
  dev: PciDevice;
  calls: string[];
  failSave: boolean;
  failResume: boolean;
}

function probeDevice(): Probe {
  const p: Probe = { dev: undefined as unknown as PciDevice, calls: [], failSave: false, failResume: false };
  p.dev = new PciDevice({
    name: 'probe',
    id: { vendor: 0x1b36, device: 0x0077, classCode: 0xff0000 },
    bars: [{ index: 0, size: 0x100 }],
    interrupts: { intx: true },
    quiesce: () => void p.calls.push('quiesce'),
    resume: () => {
      p.calls.push('resume');
      if (p.failResume) throw new Error('cannot start again');
    },
    onReset: (reason) => void p.calls.push(`reset:${reason}`),
    state: defineDeviceState({
      kind: 'probe',
      version: 1,
      schema: Field.struct({}),
      save: () => {
        p.calls.push('save');
        if (p.failSave) throw new Error('cannot save');
        return {};
      },
      load: () => void p.calls.push('load'),
    }),
  });
  return p;
}

describe('DeviceMigration', () => {
  it('quiesce once per stop, resume once per run, save on STOP_COPY, load on RESUMING -> STOP', async () => {
    const p = probeDevice();
    const m = p.dev.migration!;
    try {
      await m.setState(S.STOP);
      await m.setState(S.STOP_COPY);
      const data = await m.readData(1 << 20);
      await m.setState(S.RESUMING);
      await m.writeData(data);
      await m.setState(S.RUNNING);
      await m.setState(S.PRE_COPY);
      await m.setState(S.RUNNING);
      expect(p.calls).toEqual(['quiesce', 'save', 'save', 'load', 'resume']);
      // ('save' twice: the load saves the device's state first, to restore it if the load fails.)
      expect(p.dev.quiesced).toBe(false);
    } finally {
      p.dev.close();
    }
  });

  it('a reset of a stopped device resumes it, and the state is RUNNING', async () => {
    const p = probeDevice();
    try {
      await p.dev.migration!.setState(S.RESUMING);
      await p.dev.reset('client');
      expect(p.calls).toEqual(['quiesce', 'reset:client', 'resume']);
      expect(p.dev.migration!.state).toBe(S.RUNNING);
      expect(p.dev.quiesced).toBe(false);
    } finally {
      p.dev.close();
    }
  });

  it('a failing step goes back to where the request started', async () => {
    const p = probeDevice();
    try {
      p.failSave = true;
      await expect(p.dev.migration!.setState(S.STOP_COPY)).rejects.toMatchObject({ errno: Errno.EIO });
      expect(p.dev.migration!.state).toBe(S.RUNNING);
      expect(p.calls).toEqual(['quiesce', 'save', 'resume']);
      expect(p.dev.quiesced).toBe(false);
    } finally {
      p.dev.close();
    }
  });

  it('when going back fails too: ERROR, where only DEVICE_RESET (and DEVICE_FEATURE, region access) are served; the reset recovers', async () => {
    const p = probeDevice();
    const run = await startDevice(p.dev);
    try {
      const c = await run.connect();
      p.failSave = true;
      p.failResume = true;
      await expectErrno(c.setMigrationState(S.STOP_COPY), Errno.EIO);
      expect(await c.migrationState()).toBe(S.ERROR);
      await expectErrno(c.setMigrationState(S.RUNNING), Errno.EINVAL);
      await expectErrno(c.setMigrationState(S.STOP), Errno.EINVAL);
      const info = await rawRequest(
        c,
        { command: VfioUserCommand.DEVICE_GET_INFO },
        fields(['u32', 16], ['u32', 0], ['u32', 0], ['u32', 0]),
      );
      expectErrorReply(info, Errno.EINVAL);
      p.failResume = false;
      await c.reset();
      expect(await c.migrationState()).toBe(S.RUNNING);
      expect(p.dev.quiesced).toBe(false);
      expect((await c.getDeviceInfo()).numRegions).toBe(9);
    } finally {
      await run.stop();
    }
  });
});
