import { writeSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../../native/index.js';
import { Connection } from '../../../server/connection/index.js';
import * as P from '../../../protocol/index.js';
import { silentLogger } from '../../../server/log.js';
import { RawPeer } from '../raw-peer.js';
import { TestEndpoint } from '../test-endpoint.js';

const { VfioUserCommand, Errno, HeaderFlag } = P;
const QEMU_CAPS =
  '{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true,"migration":{"pgsize":4096,"max_bitmap_size":268435456}}}';

let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup) await c();
  cleanup = [];
});

function setup(ep = new TestEndpoint()): { ep: TestEndpoint; conn: Connection; peer: RawPeer } {
  const [a, b] = native.socketpair();
  const conn = new Connection(a, ep, silentLogger, { dmaTimeoutMs: 2000 });
  const peer = new RawPeer(b);
  cleanup.push(async () => {
    peer.close();
    await conn.close();
  });
  return { ep, conn, peer };
}

async function negotiated(ep?: TestEndpoint): Promise<{ ep: TestEndpoint; conn: Connection; peer: RawPeer }> {
  const s = setup(ep);
  const r = await s.peer.request(P.encodeVersionRequest(1, { major: 0, minor: 0, json: QEMU_CAPS }));
  expect(r.header.flags).toBe(HeaderFlag.TYPE_REPLY);
  return s;
}

function expectError(r: { header: P.MessageHeader; msg: Uint8Array } | undefined, errno: number): void {
  expect(r).toBeDefined();
  expect(r!.header.flags).toBe(HeaderFlag.TYPE_REPLY | HeaderFlag.ERROR);
  expect(r!.header.error).toBe(errno);
  expect(r!.msg.byteLength).toBe(16);
}

describe('VERSION', () => {
  it('replies 0.0 with capabilities, no longer than the request, then attaches', async () => {
    const { ep, peer, conn } = setup();
    const req = P.encodeVersionRequest(9, { major: 0, minor: 0, json: QEMU_CAPS });
    const r = await peer.request(req);
    expect(r.header.id).toBe(9);
    expect(r.msg.byteLength).toBeLessThanOrEqual(req.byteLength);
    expect(r.fds).toEqual([]);
    const v = P.decodeVersion(r.msg);
    expect(v).toMatchObject({
      major: 0,
      minor: 0,
      capabilities: { maxMsgFds: 16, maxDataXferSize: 1 << 20, pgsizes: 4096, maxDmaMaps: 65535, writeMultiple: false },
    });
    expect(ep.attaches).toBe(1);
    expect(conn.state).toBe('ready');
    expect(conn.clientCapabilities?.maxMsgFds).toBe(16);
  });

  it('shrinks the reply to fit a short request', async () => {
    const { peer } = setup();
    const req = P.encodeVersionRequest(1, {
      major: 0,
      minor: 0,
      json: '{"capabilities":{"max_msg_fds":16,"xxxxxxxxxxxxxxxxxxxx":0}}',
    });
    const r = await peer.request(req);
    expect(r.msg.byteLength).toBeLessThanOrEqual(req.byteLength);
    expect(P.decodeVersion(r.msg).capabilities.maxMsgFds).toBe(16);
  });

  it.each([
    ['a first message that is not VERSION', P.encodeDeviceInfoRequest(1)],
    ['major 1', P.encodeVersionRequest(1, { major: 1, minor: 0, json: '{}' })],
    ['bad JSON', P.encodeVersionRequest(1, { major: 0, minor: 0, json: '{"capabilities":' })],
    ['a reply first', P.encodeVersionReply(1, { major: 0, minor: 0, json: '{}' })],
  ])('%s: EINVAL and close', async (_name, msg) => {
    const { ep, peer, conn } = setup();
    expectError(await peer.request(msg), Errno.EINVAL);
    await peer.waitClosed();
    await conn.closed;
    expect(ep.attaches).toBe(0);
    expect(ep.detaches).toBe(0);
  });

  it('VERSION with an fd: EINVAL, fd closed', async () => {
    const { peer, conn } = setup();
    const efd = native.eventfd();
    expectError(await peer.request(P.encodeVersionRequest(1, { major: 0, minor: 0, json: '{}' }), [efd]), Errno.EINVAL);
    native.closeFd(efd);
    await conn.closed;
    expect(conn.heldFds).toBe(0);
  });
});

describe('requests', () => {
  it('answers GET_INFO, REGION_INFO with caps and fd, IRQ_INFO', async () => {
    const ep = new TestEndpoint();
    ep.bar1Fd = native.memfdCreate('bar1', 8192);
    cleanup.push(async () => native.closeFd(ep.bar1Fd!));
    const { peer } = await negotiated(ep);
    const info = P.decodeDeviceInfo((await peer.request(P.encodeDeviceInfoRequest(2))).msg);
    expect(info).toEqual({ argsz: 16, flags: P.DeviceFlag.PCI | P.DeviceFlag.RESET, numRegions: 9, numIrqs: 5 });
    const short = await peer.request(P.encodeRegionInfoRequest(3, 1));
    expect(short.fds).toEqual([]);
    const s = P.decodeRegionInfoReply(short.msg);
    expect(s.argsz).toBeGreaterThan(32);
    const full = await peer.request(P.encodeRegionInfoRequest(4, 1, s.argsz));
    expect(full.fds.length).toBe(1);
    native.closeFd(full.fds[0]!);
    expect(P.decodeRegionInfoReply(full.msg).caps).toEqual([
      { id: P.RegionCap.SPARSE_MMAP, areas: [{ offset: 4096n, size: 4096n }] },
    ]);
    expectError(await peer.request(P.encodeRegionInfoRequest(5, 9)), Errno.EINVAL);
    expectError(await peer.request(P.encodeRegionInfoRequest(5, 0, 31)), Errno.EINVAL);
    expect(P.decodeIrqInfo((await peer.request(P.encodeIrqInfoRequest(6, 2))).msg)).toMatchObject({
      index: 2,
      count: 4,
    });
    expectError(await peer.request(P.encodeIrqInfoRequest(7, 5)), Errno.EINVAL);
  });

  it('region access: reads, writes, and libvfio-user’s EINVAL cases', async () => {
    const { ep, peer } = await negotiated();
    const w = await peer.request(P.encodeRegionWriteRequest(2, 0x10n, 0, new Uint8Array([1, 2, 3, 4])));
    expect(P.decodeRegionWriteReply(w.msg)).toEqual({ offset: 0x10n, region: 0, count: 4 });
    const r = P.decodeRegionReadReply(
      (await peer.request(P.encodeRegionReadRequest(3, { offset: 0x10n, region: 0, count: 4 }))).msg,
    );
    expect([...r.data]).toEqual([1, 2, 3, 4]);
    expect(ep.bar0[0x11]).toBe(2);
    expectError(await peer.request(P.encodeRegionReadRequest(4, { offset: 4094n, region: 0, count: 4 })), Errno.EINVAL);
    expectError(await peer.request(P.encodeRegionReadRequest(4, { offset: 0n, region: 9, count: 4 })), Errno.EINVAL);
    expectError(
      await peer.request(P.encodeRegionReadRequest(4, { offset: 0n, region: 0, count: (1 << 20) + 1 })),
      Errno.EINVAL,
    );
    const lying = P.encodeRegionWriteRequest(5, 0n, 0, new Uint8Array(4));
    new DataView(lying.buffer).setUint32(28, 8, true);
    expectError(await peer.request(lying), Errno.EINVAL);
    const zero = P.decodeRegionReadReply(
      (await peer.request(P.encodeRegionReadRequest(6, { offset: 0n, region: 0, count: 0 }))).msg,
    );
    expect(zero.count).toBe(0);
  });

  it('NO_REPLY: never a reply, not even for errors; order is kept', async () => {
    const { ep, peer } = await negotiated();
    peer.send(P.encodeRegionWriteRequest(10, 0n, 0, new Uint8Array([7]), true));
    peer.send(P.encodeRegionReadRequest(11, { offset: 0n, region: 99, count: 1 }, true));
    const r = await peer.request(P.encodeRegionReadRequest(12, { offset: 0n, region: 0, count: 1 }));
    expect(r.header.id).toBe(12);
    expect([...P.decodeRegionReadReply(r.msg).data]).toEqual([7]);
    expect(ep.writes.length).toBe(1);
  });

  it('answers strictly in order when a handler is async', async () => {
    const ep = new TestEndpoint();
    let release!: () => void;
    ep.onRead = () => new Promise((resolve) => (release = () => resolve(new Uint8Array(4).fill(0xab))));
    const { peer } = await negotiated(ep);
    peer.send(P.encodeRegionReadRequest(20, { offset: 0n, region: 0, count: 4 }));
    peer.send(P.encodeDeviceInfoRequest(21));
    await new Promise((r) => setTimeout(r, 50));
    release();
    expect((await peer.next())!.header.id).toBe(20);
    expect((await peer.next())!.header.id).toBe(21);
  });

  it('unknown commands and DIRTY_PAGES: EINVAL; header size < 16: EINVAL and close', async () => {
    const { peer, conn, ep } = await negotiated();
    expectError(await peer.request(P.newRequest(30, 99, 8).bytes), Errno.EINVAL);
    expectError(await peer.request(P.newRequest(31, VfioUserCommand.DIRTY_PAGES, 16).bytes), Errno.EINVAL);
    expectError(await peer.request(P.encodeVersionRequest(32, { major: 0, minor: 0, json: '{}' })), Errno.EINVAL);
    expectError(
      await peer.request(
        P.encodeDeviceFeatureRequest(33, { flags: P.DeviceFeatureFlag.PROBE | 1, data: new Uint8Array(0) }),
      ),
      Errno.EINVAL,
    );
    const bad = P.encodeHeader({ id: 34, command: VfioUserCommand.DEVICE_GET_INFO, size: 8, flags: 0, error: 0 });
    expectError(await peer.request(bad), Errno.EINVAL);
    await conn.closed;
    expect(ep.detaches).toBe(1);
    expect(ep.resets).toEqual(['lost-connection']);
  });

  it('REGION_WRITE_MULTI writes every entry in order', async () => {
    const { ep, peer } = await negotiated();
    peer.send(
      P.encodeRegionWriteMultiRequest(40, [
        { offset: 0n, region: 0, count: 4, data: new Uint8Array([1, 1, 1, 1]) },
        { offset: 2n, region: 0, count: 2, data: new Uint8Array([2, 2]) },
      ]),
    );
    const r = P.decodeRegionReadReply(
      (await peer.request(P.encodeRegionReadRequest(41, { offset: 0n, region: 0, count: 4 }))).msg,
    );
    expect([...r.data]).toEqual([1, 1, 2, 2]);
    expect(ep.writes.length).toBe(2);
  });

  it('SET_IRQS validation and fd handover', async () => {
    const { ep, peer, conn } = await negotiated();
    const efd = native.eventfd();
    const ok = await peer.request(P.encodeSetIrqsRequest(50, { flags: 0x24, index: 2, start: 1, count: 1 }), [efd]);
    expect(ok.header.flags).toBe(HeaderFlag.TYPE_REPLY);
    expect(ep.setIrqsCalls.at(-1)).toMatchObject({ index: 2, start: 1, count: 1 });
    const cases: [Parameters<typeof P.encodeSetIrqsRequest>[1], number[]][] = [
      [{ flags: 0x26, index: 0, start: 0, count: 1 }, []], // two DATA bits
      [{ flags: 0x04, index: 0, start: 0, count: 1 }, []], // no ACTION
      [{ flags: 0x24, index: 5, start: 0, count: 1 }, []], // index
      [{ flags: 0x24, index: 2, start: 3, count: 2 }, []], // range
      [{ flags: 0x21, index: 0, start: 1, count: 0 }, []], // count 0, start 1
      [{ flags: 0x09, index: 3, start: 0, count: 1 }, []], // ERR MASK
      [{ flags: 0x21, index: 0, start: 0, count: 1 }, [efd]], // fd with DATA_NONE
      [{ flags: 0x24, index: 2, start: 0, count: 2 }, [efd]], // 1 fd for count 2
      [{ flags: 0x22, index: 2, start: 0, count: 2, data: new Uint8Array(1) }, []], // bool length
    ];
    for (const [req, fds] of cases) expectError(await peer.request(P.encodeSetIrqsRequest(51, req), fds), Errno.EINVAL);
    expect(conn.heldFds).toBe(0);
    native.closeFd(efd);
  });

  it('closes fds a command did not expect, and more fds than max_msg_fds is EINVAL', async () => {
    const { peer, conn } = await negotiated();
    const efd = native.eventfd();
    const r = await peer.request(P.encodeDeviceInfoRequest(60), [efd]);
    expect(r.header.flags).toBe(HeaderFlag.TYPE_REPLY);
    expect(conn.heldFds).toBe(0);
    const many = Array.from({ length: 17 }, () => efd);
    expectError(
      await peer.request(P.encodeSetIrqsRequest(61, { flags: 0x24, index: 2, start: 0, count: 4 }), many),
      Errno.EINVAL,
    );
    expect(conn.heldFds).toBe(0);
    native.closeFd(efd);
  });
});

describe('DMA', () => {
  it('DMA_MAP/UNMAP rules: overlap EINVAL, identical re-map OK, unknown unmap ENOENT, ALL', async () => {
    const { ep, peer } = await negotiated();
    const fd = native.memfdCreate('ram', 0x4000);
    const ok = (r: { header: P.MessageHeader }): void => expect(r.header.flags).toBe(HeaderFlag.TYPE_REPLY);
    ok(await peer.request(P.encodeDmaMapRequest(1, { flags: 3, offset: 0n, addr: 0x10000n, size: 0x4000n }), [fd]));
    ok(await peer.request(P.encodeDmaMapRequest(2, { flags: 3, offset: 0n, addr: 0x10000n, size: 0x4000n }), [fd]));
    expectError(
      await peer.request(P.encodeDmaMapRequest(3, { flags: 3, offset: 0n, addr: 0x12000n, size: 0x4000n })),
      Errno.EINVAL,
    );
    expectError(
      await peer.request(P.encodeDmaMapRequest(4, { flags: 0x13, offset: 0n, addr: 0x20000n, size: 0x1000n })),
      Errno.EINVAL,
    );
    expectError(
      await peer.request(
        P.encodeDmaMapRequest(5, { flags: 3 | P.DmaMapFlag.MMAP, offset: 0n, addr: 0x20000n, size: 0x1000n }),
      ),
      Errno.EINVAL,
    );
    ok(await peer.request(P.encodeDmaMapRequest(6, { flags: 1, offset: 0n, addr: 0x20000n, size: 0x1000n })));
    expect(ep.dma.regions.length).toBe(2);
    expectError(
      await peer.request(P.encodeDmaUnmapRequest(7, { flags: 0, addr: 0x10000n, size: 0x1000n })),
      Errno.ENOENT,
    );
    expectError(
      await peer.request(P.encodeDmaUnmapRequest(8, { flags: P.DmaUnmapFlag.ALL, addr: 1n, size: 0n })),
      Errno.EINVAL,
    );
    const un = await peer.request(P.encodeDmaUnmapRequest(9, { flags: 0, addr: 0x10000n, size: 0x4000n }));
    expect(P.decodeDmaUnmapReply(un.msg)).toEqual({ argsz: 24, flags: 0, addr: 0x10000n, size: 0x4000n });
    ok(await peer.request(P.encodeDmaUnmapRequest(10, { flags: P.DmaUnmapFlag.ALL, addr: 0n, size: 0n })));
    expect(ep.dma.regions.length).toBe(0);
    native.closeFd(fd);
  });

  it('server-to-client DMA_READ/WRITE while the client keeps sending requests', async () => {
    const { ep, peer } = await negotiated();
    const read = ep.port!.dmaRead(0x5000n, 8);
    const req = (await peer.next())!;
    expect(req.header.command).toBe(VfioUserCommand.DMA_READ);
    expect(req.header.flags).toBe(HeaderFlag.TYPE_COMMAND);
    expect(P.decodeDmaReadRequest(req.msg)).toEqual({ addr: 0x5000n, count: 8n });
    // The client sends a request of its own before answering.
    const info = await peer.request(P.encodeDeviceInfoRequest(70));
    expect(info.header.command).toBe(VfioUserCommand.DEVICE_GET_INFO);
    peer.send(P.encodeDmaReadReply(req.header.id, 0x5000n, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])));
    expect([...(await read)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);

    const write = ep.port!.dmaWrite(0x6000n, new Uint8Array([9, 9]));
    const wreq = (await peer.next())!;
    expect(P.decodeDmaWriteRequest(wreq.msg)).toMatchObject({ addr: 0x6000n, count: 2n });
    peer.send(P.encodeErrorReply(wreq.header.id, VfioUserCommand.DMA_WRITE, Errno.ENODEV));
    await expect(write).rejects.toMatchObject({ errno: Errno.ENODEV });

    // An unsolicited reply is dropped; the stream goes on.
    peer.send(P.encodeDmaWriteReply(999, 0n, 0));
    expect((await peer.request(P.encodeDeviceInfoRequest(71))).header.id).toBe(71);
  });

  it('chunks by the client’s max_data_xfer_size and rejects pending requests on disconnect', async () => {
    const s = setup();
    await s.peer.request(
      P.encodeVersionRequest(1, { major: 0, minor: 0, json: '{"capabilities":{"max_data_xfer_size":4}}' }),
    );
    const read = s.ep.port!.dmaRead(0x100n, 10);
    const sizes: number[] = [];
    for (let i = 0; i < 3; i++) {
      const m = (await s.peer.next())!;
      const { addr, count } = P.decodeDmaReadRequest(m.msg);
      sizes.push(Number(count));
      s.peer.send(P.encodeDmaReadReply(m.header.id, addr, new Uint8Array(Number(count)).fill(i)));
    }
    expect(sizes).toEqual([4, 4, 2]);
    expect([...(await read)]).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);
    const pending = s.ep.port!.dmaRead(0x100n, 1);
    await s.peer.next();
    s.peer.close();
    await expect(pending).rejects.toMatchObject({ errno: Errno.ENOTCONN });
    await s.conn.closed;
    expect(s.ep.detaches).toBe(1);
  });
});

describe('hostile clients', () => {
  it('a client that never reads its replies is dropped once too much is pending', async () => {
    const [a, b] = native.socketpair();
    const ep = new TestEndpoint();
    const conn = new Connection(a, ep, silentLogger, { maxPendingBytes: 256 << 10 });
    // Write without ever reading (EAGAIN: let the server's loop run).
    const put = async (m: Uint8Array): Promise<void> => {
      for (let off = 0; off < m.byteLength;) {
        try {
          off += writeSync(b, m, off);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'EPIPE' || code === 'ECONNRESET') return;
          if (code !== 'EAGAIN') throw err;
          await new Promise((r) => setTimeout(r, 1));
        }
      }
    };
    await put(P.encodeVersionRequest(1, { major: 0, minor: 0, json: '{}' }));
    const read = P.encodeRegionReadRequest(2, { offset: 0n, region: 0, count: 4096 });
    for (let i = 0; i < 2000 && conn.state !== 'closed' && conn.state !== 'closing'; i++) await put(read);
    await conn.closed;
    expect(ep.detaches).toBe(1);
    native.closeFd(b);
  });
});
