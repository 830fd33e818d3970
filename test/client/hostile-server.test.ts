/**
 * The client against a scripted, misbehaving server (raw native socket, no
 * vfio-user server code): bad VERSION replies, mismatched replies, stray fds,
 * hostile DMA_READ/DMA_WRITE requests, hang-ups and silence. The client must
 * reject with an errno, answer what it can, and never leak an fd.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { native, type NativeChannel, type Watcher } from '../../native/index.js';
import { VfioUserCommand, Errno, HeaderFlag } from '../../protocol/constants.js';
import { decodeHeader, encodeErrorReply, newMessage } from '../../protocol/header.js';
import { encodeVersionReply } from '../../protocol/version.js';
import { encodeDeviceInfoReply } from '../../protocol/device.js';
import { encodeDmaReadRequest, encodeDmaWriteRequest } from '../../protocol/dma-access.js';
import { VfioUserClient, type RawMessage } from '../../client/index.js';
import { fdBaseline, type FdBaseline } from '../helpers/fds.js';
import { tempSocketPath } from '../helpers/temp.js';
import { expectErrno, expectErrorReply } from '../helpers/harness.js';
import { captureLog, logFlushed } from '../helpers/log-capture.js';

type Script = (
  msg: Buffer,
  fds: number[],
  send: (bytes: Uint8Array, fds?: number[]) => void,
  peer: NativeChannel,
) => void;

interface RawServer {
  path: string;
  /** Messages the server received from the client (their fds were closed). */
  received: Buffer[];
  close(): void;
}

let fds: FdBaseline;
let servers: RawServer[] = [];
let clients: VfioUserClient[] = [];

/** A listening socket whose accepted connections run `script` for every message. */
function rawServer(script: Script): RawServer {
  const sock = tempSocketPath('raw');
  const lfd = native.listenUnix(sock.path, 4);
  const channels: NativeChannel[] = [];
  const received: Buffer[] = [];
  const watcher: Watcher = native.watchListener(
    lfd,
    (cfd) => {
      const ch: NativeChannel = native.openChannel(
        cfd,
        { maxMessageSize: 1 << 21, maxFds: 16 },
        (msg, mfds) => {
          received.push(msg);
          for (const fd of mfds) native.closeFd(fd);
          script(msg, mfds, (bytes, sfds) => ch.send(bytes, sfds), ch);
        },
        () => ch.close(),
      );
      channels.push(ch);
    },
    () => undefined,
  );
  const server = {
    path: sock.path,
    received,
    close() {
      watcher.close();
      native.closeFd(lfd);
      for (const ch of channels) ch.close();
      sock.remove();
    },
  };
  servers.push(server);
  return server;
}

/** A well-behaved VERSION answer, then `after` for everything else. */
function afterVersion(after: Script, json = '{"capabilities":{"max_msg_fds":8}}'): Script {
  return (msg, mfds, send, peer) => {
    const h = decodeHeader(msg);
    if (h.command === VfioUserCommand.VERSION) send(encodeVersionReply(h.id, { major: 0, minor: 0, json }));
    else after(msg, mfds, send, peer);
  };
}

async function connect(path: string, timeoutMs = 2000): Promise<VfioUserClient> {
  const c = await VfioUserClient.connect(path, { timeoutMs });
  clients.push(c);
  return c;
}

beforeEach(() => {
  fds = fdBaseline();
});

afterEach(async () => {
  for (const c of clients) c.close();
  for (const s of servers) s.close();
  clients = [];
  servers = [];
  await fds.settle();
});

describe('client vs a hostile server: VERSION', () => {
  it('a reply larger than the request: EPROTO', async () => {
    const s = rawServer((msg, _f, send) => {
      const h = decodeHeader(msg);
      send(
        encodeVersionReply(h.id, {
          major: 0,
          minor: 0,
          json: JSON.stringify({ capabilities: { pad: 'x'.repeat(1000) } }),
        }),
      );
    });
    await expectErrno(VfioUserClient.connect(s.path), Errno.EPROTO);
  });

  it('an error reply: rejects with its errno', async () => {
    const s = rawServer((msg, _f, send) =>
      send(encodeErrorReply(decodeHeader(msg).id, VfioUserCommand.VERSION, Errno.EPERM)),
    );
    await expectErrno(VfioUserClient.connect(s.path), Errno.EPERM);
  });

  it('major 1: EPROTO', async () => {
    const s = rawServer((msg, _f, send) =>
      send(encodeVersionReply(decodeHeader(msg).id, { major: 1, minor: 0, json: '{}' })),
    );
    await expectErrno(VfioUserClient.connect(s.path), Errno.EPROTO);
  });

  it('fds with the reply: EPROTO, fds closed', async () => {
    const s = rawServer((msg, _f, send) => {
      const efd = native.eventfd(0);
      send(encodeVersionReply(decodeHeader(msg).id, { major: 0, minor: 0, json: '{}' }), [efd]);
      native.closeFd(efd);
    });
    await expectErrno(VfioUserClient.connect(s.path), Errno.EPROTO);
  });

  it('malformed JSON: EINVAL', async () => {
    const s = rawServer((msg, _f, send) =>
      send(encodeVersionReply(decodeHeader(msg).id, { major: 0, minor: 0, json: '{"capabilities":' })),
    );
    await expectErrno(VfioUserClient.connect(s.path), Errno.EINVAL);
  });

  it('silence: ETIMEDOUT', async () => {
    const s = rawServer(() => undefined);
    await expect(VfioUserClient.connect(s.path, { timeoutMs: 200 })).rejects.toMatchObject({ errno: Errno.ETIMEDOUT });
  });

  it('hang-up: ECONNRESET', async () => {
    const s = rawServer((_m, _f, _s, peer) => peer.close());
    await expectErrno(VfioUserClient.connect(s.path), Errno.ECONNRESET);
  });
});

describe('client vs a hostile server: replies', () => {
  it('a reply with the wrong command: EPROTO', async () => {
    const s = rawServer(
      afterVersion((msg, _f, send) =>
        send(
          encodeDeviceInfoReply(decodeHeader(msg).id, { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 }).map((b, i) =>
            i === 2 ? 7 : b,
          ),
        ),
      ),
    );
    const c = await connect(s.path);
    await expectErrno(c.getDeviceInfo(), Errno.EPROTO);
  });

  it('a REGION_READ reply with fewer bytes than asked: rejected', async () => {
    const s = rawServer(
      afterVersion((msg, _f, send) => {
        const h = decodeHeader(msg);
        const m = newMessage(h.id, VfioUserCommand.REGION_READ, HeaderFlag.TYPE_REPLY, 16 + 2);
        m.bytes.set(msg.subarray(16, 32), 16);
        send(m.bytes);
      }),
    );
    const c = await connect(s.path);
    await expect(c.regionRead(7, 0, 4)).rejects.toHaveProperty('errno');
  });

  it('a REGION_READ reply for another offset: EPROTO', async () => {
    const s = rawServer(
      afterVersion((msg, _f, send) => {
        const h = decodeHeader(msg);
        const m = newMessage(h.id, VfioUserCommand.REGION_READ, HeaderFlag.TYPE_REPLY, 16 + 4);
        m.bytes.set(msg.subarray(16, 32), 16);
        m.view.setBigUint64(16, 0x40n, true);
        send(m.bytes);
      }),
    );
    const c = await connect(s.path);
    await expectErrno(c.regionRead(7, 0, 4), Errno.EPROTO);
  });

  it('GET_REGION_INFO with two fds: EPROTO, both closed', async () => {
    const s = rawServer(
      afterVersion((msg, _f, send) => {
        const h = decodeHeader(msg);
        const m = newMessage(h.id, VfioUserCommand.DEVICE_GET_REGION_INFO, HeaderFlag.TYPE_REPLY, 32);
        m.view.setUint32(16, 32, true);
        const a = native.eventfd(0);
        const b = native.eventfd(0);
        send(m.bytes, [a, b]);
        native.closeFd(a);
        native.closeFd(b);
      }),
    );
    const c = await connect(s.path);
    await expectErrno(c.getRegionInfo(2, 32), Errno.EPROTO);
  });

  it('a reply to an id nobody asked for is recorded as a stray, its fds closed', async () => {
    const s = rawServer(
      afterVersion((msg, _f, send) => {
        const h = decodeHeader(msg);
        const efd = native.eventfd(0);
        send(encodeDeviceInfoReply((h.id + 1000) & 0xffff, { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 }), [efd]);
        native.closeFd(efd);
        send(encodeDeviceInfoReply(h.id, { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 }));
      }),
    );
    const c = await connect(s.path);
    expect((await c.getDeviceInfo()).numRegions).toBe(9);
    expect(c.strays.length).toBe(1);
  });

  it('10,000 stray replies: the client keeps the first 4096 and warns 5 times, then logs them at debug only', async () => {
    const s = rawServer(
      afterVersion((msg, _f, send) => {
        const h = decodeHeader(msg);
        const stray = encodeDeviceInfoReply((h.id + 1000) & 0xffff, { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 });
        for (let i = 0; i < 10_000; i++) send(stray);
        send(encodeDeviceInfoReply(h.id, { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 }));
      }),
    );
    const { log, lines } = captureLog('warn');
    const c = await VfioUserClient.connect(s.path, { timeoutMs: 5000, log });
    clients.push(c);
    expect((await c.getDeviceInfo()).numRegions).toBe(9);
    expect(c.strays.length).toBe(4096);
    await logFlushed();
    expect(lines.filter((l) => l.msg.startsWith('reply to no pending request'))).toHaveLength(5);
  });

  it('hang-up with requests pending: all reject with ECONNRESET', async () => {
    const s = rawServer(afterVersion((_m, _f, _s, peer) => peer.close()));
    const c = await connect(s.path);
    const results = await Promise.allSettled([c.getDeviceInfo(), c.cfg16(0), c.getIrqInfo(0)]);
    for (const r of results) expect(r).toMatchObject({ status: 'rejected', reason: { errno: Errno.ECONNRESET } });
    expect(await c.closed).toBeTypeOf('string');
  });
});

describe('client vs a hostile server: DMA requests', () => {
  /** A server that, on the client's first GET_INFO, sends `requests` and reports what came back. */
  function dmaProbe(requests: Array<{ bytes: Uint8Array; fds?: () => number[] }>) {
    const answers: RawMessage['header'][] = [];
    const replies: Buffer[] = [];
    let done: () => void = () => undefined;
    const finished = new Promise<void>((r) => (done = r));
    const s = rawServer(
      afterVersion((msg, _f, send) => {
        const h = decodeHeader(msg);
        if ((h.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.TYPE_REPLY) {
          answers.push(h);
          replies.push(msg);
          if (
            answers.length === requests.filter((r) => (decodeHeader(r.bytes).flags & HeaderFlag.NO_REPLY) === 0).length
          )
            done();
          return;
        }
        if (h.command === VfioUserCommand.DMA_MAP) {
          send(newMessage(h.id, VfioUserCommand.DMA_MAP, HeaderFlag.TYPE_REPLY, 0).bytes);
          return;
        }
        if (h.command === VfioUserCommand.DEVICE_GET_INFO) {
          for (const r of requests) {
            const extra = r.fds?.() ?? [];
            send(r.bytes, extra);
            for (const fd of extra) native.closeFd(fd);
          }
          send(encodeDeviceInfoReply(h.id, { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 }));
        }
      }),
    );
    return { s, answers, replies, finished };
  }

  it('serves reads and writes of mapped memory; refuses the rest with the right errno', async () => {
    const withFlags = (bytes: Uint8Array, flags: number) => {
      new DataView(bytes.buffer, bytes.byteOffset).setUint32(8, flags, true);
      return bytes;
    };
    const probe = dmaProbe([
      { bytes: encodeDmaReadRequest(1, 0x1000n, 8) }, // ok
      { bytes: encodeDmaWriteRequest(2, 0x1004n, new Uint8Array([9, 9])) }, // ok
      { bytes: encodeDmaReadRequest(3, 0x9000n, 8) }, // EFAULT
      { bytes: encodeDmaWriteRequest(4, 0x2000n, new Uint8Array([1])) }, // EPERM (read-only map)
      { bytes: encodeDmaReadRequest(5, 0x1000n, 4), fds: () => [native.eventfd(0)] }, // EINVAL (fds), fd closed
      { bytes: newMessage(6, VfioUserCommand.DMA_READ, 0, 8).bytes }, // EINVAL (short)
      { bytes: newMessage(7, VfioUserCommand.DEVICE_RESET, 0, 0).bytes }, // ENOSYS
      { bytes: encodeDmaReadRequest(8, 0x1000n, 2 << 20) }, // E2BIG
      { bytes: withFlags(encodeDmaWriteRequest(9, 0x1000n, new Uint8Array([7])), HeaderFlag.NO_REPLY) }, // applied, no reply
    ]);
    const c = await connect(probe.s.path);
    const mem = new Uint8Array(0x1000).map((_, i) => i & 0xff);
    await c.dmaMap({ addr: 0x1000n, backing: mem });
    await c.dmaMap({ addr: 0x2000n, size: 0x1000n, flags: 1 });
    await c.getDeviceInfo();
    await probe.finished;
    const byId = new Map(probe.answers.map((h, i) => [h.id, { h, msg: probe.replies[i]! }]));
    expect(byId.get(1)!.h.flags).toBe(HeaderFlag.TYPE_REPLY);
    expect([...byId.get(1)!.msg.subarray(32)]).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect([...mem.subarray(4, 6)]).toEqual([9, 9]);
    expect(byId.get(2)!.msg.byteLength).toBe(32);
    for (const [id, errno] of [
      [3, Errno.EFAULT],
      [4, Errno.EPERM],
      [5, Errno.EINVAL],
      [6, Errno.EINVAL],
      [7, Errno.ENOSYS],
      [8, Errno.E2BIG],
    ] as const) {
      expectErrorReply({ header: byId.get(id)!.h, message: byId.get(id)!.msg, fds: [] }, errno);
    }
    expect(byId.has(9)).toBe(false);
    expect(mem[0]).toBe(7);
    expect(c.served).toEqual({ dmaRead: 1, dmaWrite: 2, refused: 6 });
  });
});
