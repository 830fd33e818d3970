/**
 * DEVICE_GET_IRQ_INFO (7) and DEVICE_SET_IRQS (8): the codec, the happy path on
 * both device models, and validation with libvfio-user's rules
 * (device_set_irqs_validate): EINVAL, fds closed, alive.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import * as P from '../../protocol/index.js';
import {
  VfioUserCommand,
  Errno,
  HeaderFlag,
  IrqInfoFlag,
  IrqSetFlag as F,
  PciIrq,
  PciRegion,
} from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import {
  DEVICE_KINDS,
  expectAlive,
  expectErrorReply,
  rawRequest,
  fields,
  type RunningDevice,
} from '../helpers/harness.js';
import { MSIX_VECTORS, Reg } from '../helpers/test-device.js';
import type { RawMessage, VfioUserClient } from '../../client/index.js';

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
  const head = fields(
    ['u32', s.argsz ?? 20 + data.length],
    ['u32', s.flags],
    ['u32', s.index],
    ['u32', s.start],
    ['u32', s.count],
  );
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
  [
    'BOOL data shorter than count',
    { flags: F.DATA_BOOL | F.ACTION_TRIGGER, index: 2, start: 0, count: 4, data: [1, 1] },
  ],
  [
    'BOOL data longer than count',
    { flags: F.DATA_BOOL | F.ACTION_TRIGGER, index: 2, start: 0, count: 1, data: [1, 1] },
  ],
];

const fdCases: Array<[string, SetIrqs]> = [
  ['fds with DATA_NONE', { flags: NONE, index: 2, start: 0, count: 1, fds: 1 }],
  ['fds with DATA_BOOL', { flags: F.DATA_BOOL | F.ACTION_TRIGGER, index: 2, start: 0, count: 1, data: [1], fds: 1 }],
  ['fewer fds than count', { flags: EVT, index: 2, start: 0, count: 3, fds: 2 }],
  ['more fds than count', { flags: EVT, index: 2, start: 0, count: 1, fds: 2 }],
  ['fds on an out-of-range index', { flags: EVT, index: 7, start: 0, count: 1, fds: 1 }],
  ['more fds than max_msg_fds', { flags: EVT, index: 2, start: 0, count: MSIX_VECTORS, fds: 17 }],
];

const u32s = (...v: number[]) => fields(...v.map((x) => ['u32', x] as ['u32', number]));

describe('codec', () => {
  it('IRQ_INFO / SET_IRQS round-trip', () => {
    expect(P.decodeIrqInfo(P.encodeIrqInfoReply(1, { argsz: 16, flags: 1, index: 2, count: 4 }))).toEqual({
      argsz: 16,
      flags: 1,
      index: 2,
      count: 4,
    });
    const s = P.decodeSetIrqsRequest(
      P.encodeSetIrqsRequest(1, { flags: 0x22, index: 2, start: 1, count: 2, data: new Uint8Array([1, 0]) }),
    );
    expect(s).toMatchObject({ argsz: 22, flags: 0x22, index: 2, start: 1, count: 2 });
    expect([...s.data]).toEqual([1, 0]);
  });

  it('every field at its spec offset', () => {
    const u32 = (m: Uint8Array, o: number) => new DataView(m.buffer, m.byteOffset).getUint32(o, true);
    const irq = P.encodeIrqInfoReply(1, { argsz: 16, flags: 1, index: 2, count: 4 });
    expect([16, 20, 24, 28].map((o) => u32(irq, o))).toEqual([16, 1, 2, 4]);
    const set = P.encodeSetIrqsRequest(1, { flags: 0x22, index: 2, start: 1, count: 2, data: new Uint8Array([1, 0]) });
    expect([16, 20, 24, 28, 32].map((o) => u32(set, o))).toEqual([22, 0x22, 2, 1, 2]);
    expect([...set.subarray(36)]).toEqual([1, 0]);
  });
});

describe('GET_IRQ_INFO: bad input', () => {
  let ic: VfioUserClient;
  connectedEachTest((client) => {
    ic = client;
  });

  const cases: Array<[string, Uint8Array]> = [
    ['GET_IRQ_INFO payload 8 bytes', u32s(16, 0)],
    ['GET_IRQ_INFO argsz 8', u32s(8, 0, 0, 0)],
    ['GET_IRQ_INFO index 5 (= num_irqs)', u32s(16, 0, 5, 0)],
    ['GET_IRQ_INFO index 0x80000000', u32s(16, 0, 0x80000000, 0)],
  ];
  for (const [what, payload] of cases) {
    it(`${what} -> EINVAL, alive`, async () => {
      expectErrorReply(await rawRequest(ic, { command: VfioUserCommand.DEVICE_GET_IRQ_INFO }, payload), Errno.EINVAL);
      await expectAlive(ic);
    });
  }

  it('extra trailing bytes after a valid GET_IRQ_INFO are tolerated', async () => {
    const reply = await rawRequest(
      ic,
      { command: VfioUserCommand.DEVICE_GET_IRQ_INFO },
      u32s(16, 0, 2, 0, 0xdead, 0xbeef),
    );
    expect(reply.header.flags & 0x20).toBe(0);
  });
});

describe.each(DEVICE_KINDS)('%s', (_kind, make) => {
  connectedEachTest((client, started) => {
    c = client;
    run = started;
  }, make);

  describe('happy path', () => {
    const u32 = (v: number) => fields(['u32', v]);

    it('DEVICE_GET_IRQ_INFO for every index', async () => {
      const counts = [1, 1, MSIX_VECTORS, 1, 1];
      for (let i = 0; i < PciIrq.COUNT; i++) {
        const info = await c.getIrqInfo(i);
        expect(info.index).toBe(i);
        expect(info.count).toBe(counts[i]);
        expect(info.flags & IrqInfoFlag.EVENTFD).toBe(IrqInfoFlag.EVENTFD);
      }
    });

    it('DEVICE_SET_IRQS with eventfds: the device signals them', async () => {
      await c.enableIrqs(PciIrq.MSIX, MSIX_VECTORS);
      await c.regionWrite(PciRegion.BAR0, Reg.IRQ, u32(3));
      expect(await c.waitForIrq(PciIrq.MSIX, 3, 5000)).toBe(1);
      await c.regionWrite(PciRegion.BAR0, Reg.IRQ, u32(0));
      expect(await c.waitForIrq(PciIrq.MSIX, 0, 5000)).toBe(1);
      // NONE|TRIGGER fires a vector from the client side.
      await c.setIrqs({ flags: F.DATA_NONE | F.ACTION_TRIGGER, index: PciIrq.MSIX, start: 1, count: 1 });
      expect(await c.waitForIrq(PciIrq.MSIX, 1, 5000)).toBe(1);
      // BOOL|TRIGGER fires where data is 1.
      await c.setIrqs({
        flags: F.DATA_BOOL | F.ACTION_TRIGGER,
        index: PciIrq.MSIX,
        start: 0,
        count: 4,
        data: new Uint8Array([0, 0, 1, 0]),
      });
      expect(await c.waitForIrq(PciIrq.MSIX, 2, 5000)).toBe(1);
      await c.disableIrqs(PciIrq.MSIX);
      for (let v = 0; v < MSIX_VECTORS; v++) expect(run.device.hasEventfd(PciIrq.MSIX, v)).toBe(false);
    });

    it('DEVICE_SET_IRQS: INTx mask, unmask and the resample fd', async () => {
      await c.enableIrqs(PciIrq.INTX, 1);
      await c.setIrqs({ flags: F.DATA_NONE | F.ACTION_MASK, index: PciIrq.INTX, start: 0, count: 1 });
      const resample = native.eventfd(0);
      await c.setIrqs({
        flags: F.DATA_EVENTFD | F.ACTION_UNMASK,
        index: PciIrq.INTX,
        start: 0,
        count: 1,
        fds: [resample],
      });
      native.closeFd(resample);
      await c.setIrqs({ flags: F.DATA_NONE | F.ACTION_UNMASK, index: PciIrq.INTX, start: 0, count: 1 });
      await c.regionWrite(PciRegion.BAR0, Reg.IRQ, u32(0));
      expect(await c.waitForIrq(PciIrq.INTX, 0, 5000)).toBe(1);
    });
  });

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
        let reply: RawMessage;
        try {
          // Even 17 fds (more than the max_msg_fds we negotiate) arrive whole: the server's
          // recvmsg makes room for far more, so the excess is an EINVAL, not a dropped stream.
          reply = await rawRequest(c, { command: VfioUserCommand.DEVICE_SET_IRQS }, payload(s), efds);
        } finally {
          for (const fd of efds) native.closeFd(fd);
        }
        expectErrorReply(reply, Errno.EINVAL);
        await expectAlive(c);
        for (let v = 0; v < MSIX_VECTORS; v++) expect(run.device.hasEventfd(2, v)).toBe(false);
      });
    }

    it("QEMU's disable of an index with no vectors installed is accepted (EVENTFD with 0 fds de-assigns)", async () => {
      const r = await rawRequest(
        c,
        { command: VfioUserCommand.DEVICE_SET_IRQS },
        payload({ flags: EVT, index: 2, start: 0, count: 2 }),
      );
      expect(r.header.flags & HeaderFlag.ERROR).toBe(0);
      expect(r.header.error).toBe(0);
      expect(r.message.byteLength).toBe(16);
      for (let v = 0; v < MSIX_VECTORS; v++) expect(run.device.hasEventfd(2, v)).toBe(false);
      await expectAlive(c);
    });

    it('MSI-X "enable with no vectors" then per-vector installs at any start (QEMU)', async () => {
      const r = await rawRequest(
        c,
        { command: VfioUserCommand.DEVICE_SET_IRQS },
        payload({ flags: EVT, index: 2, start: 0, count: 1 }),
      );
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
