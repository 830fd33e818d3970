/**
 * A device module for the edit-reload loop (docs/writing-a-device.md, "State
 * and the edit-reload loop"): serve it with --watch, attach a guest, then
 * edit this file. Each save reloads the device under the running guest: the
 * registers' code is the new one, their values (the device's state) are kept.
 *
 *   npx vfio-user-ts serve --watch --device ./examples/reloadable-device.ts --socket /tmp/reloadable.sock
 *   npx vfio-user-ts vm --socket /tmp/reloadable.sock
 *   # in the guest (BAR0's address from lspci -v): devmem 0xfe000000 32
 *
 * BAR0 (4 KiB, little-endian u32):
 *   0x00 ANSWER   read-only: the constant below (change it, save, read it again)
 *   0x04 SCRATCH  read/write: the guest's value, kept across reloads
 *   0x08 WRITES   read-only: writes to SCRATCH so far, kept across reloads
 */
import { defineDeviceState, Field, PciDevice, type DeviceContext } from 'vfio-user-ts';

/** What ANSWER reads: edit it while the guest runs. */
export const ANSWER = 0x2a2a0001;

export const ReloadableReg = { ANSWER: 0x00, SCRATCH: 0x04, WRITES: 0x08 } as const;

/**
 * The device's state: what a reload carries from the running generation to
 * the new one. Adding a field means a new version, with an `older` entry
 * that upgrades a version-1 state (see the docs).
 */
const fields = Field.struct({ scratch: Field.u32(), writes: Field.u32() });

export default function createDevice(ctx: DeviceContext): PciDevice {
  const regs = { scratch: 0, writes: 0 };
  return new PciDevice({
    name: ctx.name,
    log: ctx.log,
    id: { vendor: 0x1b36, device: 0x0005, classCode: 0xff0000, revision: 1 },
    bars: [
      {
        index: 0,
        size: 0x1000,
        type: 'mem32',
        read: (offset) => {
          switch (offset & ~3) {
            case ReloadableReg.ANSWER:
              return ANSWER;
            case ReloadableReg.SCRATCH:
              return regs.scratch;
            case ReloadableReg.WRITES:
              return regs.writes;
            default:
              return 0;
          }
        },
        write: (offset, _size, value) => {
          if ((offset & ~3) !== ReloadableReg.SCRATCH) return;
          regs.scratch = value >>> 0;
          regs.writes = (regs.writes + 1) >>> 0;
        },
      },
    ],
    interrupts: { intx: true },
    state: defineDeviceState({
      kind: 'reloadable-example',
      version: 1,
      schema: fields,
      save: () => ({ ...regs }),
      load: (saved) => {
        Object.assign(regs, saved);
      },
    }),
    onReset: () => {
      regs.scratch = 0;
      regs.writes = 0;
    },
  });
}
