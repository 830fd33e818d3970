/** DEVICE_SET_IRQS validation (libvfio-user's device_set_irqs_validate): EINVAL, fds closed, alive. */
import { describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import { VfioUserCommand, Errno, IrqSetFlag as F, PciIrq } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import { DEVICE_KINDS, expectAlive, expectErrorReply, rawRequest, fields, type RunningDevice } from '../helpers/harness.js';
import { MSIX_VECTORS } from '../helpers/test-device.js';
import type { VfioUserClient } from '../../client/index.js';

let run: RunningDevice;
let c: VfioUserClient;

interface SetIrqs {
  argsz?: number;
  flags: number;
  index: number;
  start: number;
  count: number;
  data?: number[];
  fds?: number;
}

function payload(s: SetIrqs): Uint8Array {
  const data = s.data ?? [];
  const head = fields(['u32', s.argsz ?? 20 + data.length], ['u32', s.flags], ['u32', s.index], ['u32', s.start], ['u32', s.count]);
  const p = new Uint8Array(20 + data.length);
  p.set(head);
  p.set(data, 20);
  return p;
}

const EVT = F.DATA_EVENTFD | F.ACTION_TRIGGER;
const NONE = F.DATA_NONE | F.ACTION_TRIGGER;

const cases: Array<[string, SetIrqs]> = [
  ['argsz < 20', { argsz: 16, flags: NONE, index: 2, start: 0, count: 1 }],
  ['index 5', { flags: NONE, index: 5, start: 0, count: 1 }],
  ['two DATA flags', { flags: F.DATA_NONE | F.DATA_BOOL | F.ACTION_TRIGGER, index: 2, start: 0, count: 1, data: [1] }],
  ['no DATA flag', { flags: F.ACTION_TRIGGER, index: 2, start: 0, count: 1 }],
  ['two ACTION flags', { flags: F.DATA_NONE | F.ACTION_MASK | F.ACTION_UNMASK, index: 0, start: 0, count: 1 }],
  ['no ACTION flag', { flags: F.DATA_NONE, index: 2, start: 0, count: 1 }],
  ['unknown flag bits', { flags: NONE | 0x40, index: 2, start: 0, count: 1 }],
  ['start >= count of vectors', { flags: NONE, index: 2, start: MSIX_VECTORS, count: 1 }],
  ['start + count > vectors', { flags: NONE, index: 2, start: 2, count: MSIX_VECTORS }],
  ['start + count overflowing u32', { flags: NONE, index: 2, start: 1, count: 0xffffffff }],
  ['ERR with MASK', { flags: F.DATA_NONE | F.ACTION_MASK, index: PciIrq.ERR, start: 0, count: 1 }],
  ['REQ with count 2', { flags: NONE, index: PciIrq.REQ, start: 0, count: 2 }],
  ['count 0 with start != 0', { flags: NONE, index: 2, start: 1, count: 0 }],
  ['count 0 with MASK', { flags: F.DATA_NONE | F.ACTION_MASK, index: 0, start: 0, count: 0 }],
  ['BOOL data shorter than count', { flags: F.DATA_BOOL | F.ACTION_TRIGGER, index: 2, start: 0, count: 4, data: [1, 1] }],
  ['BOOL data longer than count', { flags: F.DATA_BOOL | F.ACTION_TRIGGER, index: 2, start: 0, count: 1, data: [1, 1] }],
];

const fdCases: Array<[string, SetIrqs]> = [
  ['fds with DATA_NONE', { flags: NONE, index: 2, start: 0, count: 1, fds: 1 }],
  ['fds with DATA_BOOL', { flags: F.DATA_BOOL | F.ACTION_TRIGGER, index: 2, start: 0, count: 1, data: [1], fds: 1 }],
  ['fewer fds than count', { flags: EVT, index: 2, start: 0, count: 3, fds: 2 }],
  ['more fds than count', { flags: EVT, index: 2, start: 0, count: 1, fds: 2 }],
  ['fds on an out-of-range index', { flags: EVT, index: 7, start: 0, count: 1, fds: 1 }],
  ['more fds than max_msg_fds', { flags: EVT, index: 2, start: 0, count: MSIX_VECTORS, fds: 17 }],
];

describe.each(DEVICE_KINDS)('%s', (_kind, make) => {
  connectedEachTest((client, started) => {
    c = client;
    run = started;
  }, make);

  describe('SET_IRQS: bad input', () => {
    for (const [what, s] of cases) {
      it(`${what} -> EINVAL, alive`, async () => {
        expectErrorReply(await rawRequest(c, { command: VfioUserCommand.DEVICE_SET_IRQS }, payload(s)), Errno.EINVAL);
        await expectAlive(c);
      });
    }

    for (const [what, s] of fdCases) {
      it(`${what} -> EINVAL, the fds are closed, alive`, async () => {
        const efds = Array.from({ length: s.fds! }, () => native.eventfd(0));
        const reply = await rawRequest(c, { command: VfioUserCommand.DEVICE_SET_IRQS }, payload(s), efds).catch((e: Error) => e);
        for (const fd of efds) native.closeFd(fd);
        if (s.fds! > 16) {
          // more fds than the server's recvmsg has room for: the connection may be dropped (MSG_CTRUNC)
          if (reply instanceof Error) return;
        }
        expectErrorReply(reply as never, Errno.EINVAL);
        await expectAlive(c);
        for (let v = 0; v < MSIX_VECTORS; v++) expect(run.device.hasEventfd(2, v)).toBe(false);
      });
    }

    it("QEMU's disable of an index with no vectors installed is accepted (EVENTFD with 0 fds de-assigns)", async () => {
      await rawRequest(c, { command: VfioUserCommand.DEVICE_SET_IRQS }, payload({ flags: EVT, index: 2, start: 0, count: 2 }));
      await expectAlive(c);
    });

    it('MSI-X "enable with no vectors" then per-vector installs at any start (QEMU)', async () => {
      const r = await rawRequest(c, { command: VfioUserCommand.DEVICE_SET_IRQS }, payload({ flags: EVT, index: 2, start: 0, count: 1 }));
      expect(r.header.flags & 0x20).toBe(0);
      await c.enableIrqs(2, 1, 3);
      await c.enableIrqs(2, 1, 1);
      expect([0, 1, 2, 3].map((v) => run.device.hasEventfd(2, v))).toEqual([false, true, false, true]);
      // Replacing a vector's eventfd: the old one is closed by the device, the new one is signalled.
      await c.enableIrqs(2, 1, 3);
      run.device.signal(3);
      expect(await c.waitForIrq(2, 3, 5000)).toBe(1);
    });
  });
});
