/**
 * What a hostile client can make one connection hold (docs/protocol.md, "What
 * a hostile client can and cannot do"): for each bound, a client that runs
 * into it gets the documented errno or is dropped, and the process's open
 * fds and RSS stay flat while it tries.
 */
import { writeSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../../native/index.js';
import { Connection } from '../../../server/connection/index.js';
import * as P from '../../../protocol/index.js';
import { silentLogger } from '../../../server/log.js';
import { listOpenFds } from '../../helpers/fds.js';

const openFdCount = (): number => listOpenFds().length;
import { startDevice } from '../../helpers/harness.js';
import { captureLog, logFlushed } from '../../helpers/log-capture.js';
import { RawPeer } from '../raw-peer.js';
import { TestEndpoint } from '../test-endpoint.js';

const { Errno, HeaderFlag, PciIrq, PciRegion } = P;
const MiB = 1 << 20;

let cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

const tick = (ms = 1): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Write a whole message on a raw socket fd (never reading from it), waiting on
 * EAGAIN so the server's loop runs. False once the server has hung up.
 */
async function put(fd: number, m: Uint8Array): Promise<boolean> {
  for (let off = 0; off < m.byteLength;) {
    try {
      off += writeSync(fd, m, off);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EPIPE' || code === 'ECONNRESET') return false;
      if (code !== 'EAGAIN') throw err;
      await tick();
    }
  }
  return true;
}

function gone(conn: Connection): boolean {
  return conn.state === 'closing' || conn.state === 'closed';
}

/** A connection on one end of a socketpair; the other end is a raw fd the test writes to and never reads. */
function rawClient(ep: TestEndpoint, options: ConstructorParameters<typeof Connection>[3] = {}) {
  const [a, b] = native.socketpair();
  const conn = new Connection(a, ep, silentLogger, options);
  cleanup.push(async () => {
    native.closeFd(b);
    await conn.close();
  });
  return { conn, fd: b };
}

/** An async BAR0 read that answers only when released: requests behind it queue. */
function stall(ep: TestEndpoint): () => void {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  ep.onRead = async (_offset, count) => {
    await gate;
    return new Uint8Array(count);
  };
  cleanup.push(() => release());
  return release;
}

const VERSION = P.encodeVersionRequest(1, { major: 0, minor: 0, json: '{"capabilities":{"max_msg_fds":16}}' });

describe('bounds: a client that does not read', () => {
  it('replies carrying fds: dropped after 128 unread, never holding more dups than that', async () => {
    const ep = new TestEndpoint();
    ep.bar1Fd = native.memfdCreate('bar1', 8192);
    cleanup.push(() => native.closeFd(ep.bar1Fd!));
    const base = openFdCount();
    const { conn, fd } = rawClient(ep);
    await put(fd, VERSION);
    // Each reply carries a dup of the region's fd while it waits in the send queue.
    const info = P.encodeRegionInfoRequest(2, 1, 256);
    let peak = 0;
    for (let i = 0; i < 5000 && !gone(conn); i++) {
      if (!(await put(fd, info))) break;
      if (i % 64 === 0) peak = Math.max(peak, openFdCount() - base);
    }
    expect(gone(conn)).toBe(true);
    await conn.closed;
    // 2 socketpair ends, at most ~128 queued dups, plus slack for the fd listing itself.
    expect(peak).toBeLessThan(128 + 32);
    expect(ep.detaches).toBe(1);
  });
});

describe('bounds: requests waiting behind a slow handler', () => {
  it('their fds: the client is dropped past 1024 held fds, and they are all closed', async () => {
    const ep = new TestEndpoint();
    const [a, b] = native.socketpair();
    const conn = new Connection(a, ep, silentLogger);
    const peer = new RawPeer(b);
    cleanup.push(async () => {
      peer.close();
      await conn.close();
    });
    const efds = Array.from({ length: 16 }, () => native.eventfd(0));
    cleanup.push(() => efds.forEach((f) => native.closeFd(f)));
    await peer.request(VERSION);
    const release = stall(ep);
    const base = openFdCount();
    peer.send(P.encodeRegionReadRequest(2, { offset: 0n, region: 0, count: 4 }));
    await tick(20);
    // 16 fds per message is within max_msg_fds: each would be answered (and its fds closed) in turn.
    let peak = 0;
    for (let i = 0; i < 200 && !gone(conn); i++) {
      peer.send(P.encodeDeviceInfoRequest(100 + i), efds);
      await tick();
      peak = Math.max(peak, openFdCount() - base);
    }
    expect(gone(conn)).toBe(true);
    release();
    await conn.closed;
    expect(peak).toBeLessThan(1024 + 16 + 32);
    expect(conn.heldFds).toBe(0);
  });

  it('their bytes: dropped past 64 MiB queued; RSS stays within that', async () => {
    const ep = new TestEndpoint();
    const { conn, fd } = rawClient(ep);
    await put(fd, VERSION);
    const release = stall(ep);
    await put(fd, P.encodeRegionReadRequest(2, { offset: 0n, region: 0, count: 4 }));
    // 1 MiB writes (EINVAL once they run: region 0 is 4 KiB), one reused buffer on our side.
    const big = P.encodeRegionWriteRequest(3, 0n, 0, new Uint8Array(MiB));
    const rss0 = process.memoryUsage.rss();
    let peak = 0;
    let sent = 0;
    for (; sent < 200 && !gone(conn); sent++) {
      if (!(await put(fd, big))) break;
      peak = Math.max(peak, process.memoryUsage.rss() - rss0);
    }
    expect(gone(conn)).toBe(true);
    expect(sent).toBeLessThan(80);
    release();
    await conn.closed;
    expect(peak).toBeLessThan(160 * MiB);
  });
});

describe('bounds: message size', () => {
  it('a message larger than max_data_xfer_size + 32 is EINVAL, its body discarded: RSS flat over 800 MiB of them', async () => {
    const ep = new TestEndpoint();
    const [a, b] = native.socketpair();
    const conn = new Connection(a, ep, silentLogger);
    const peer = new RawPeer(b);
    cleanup.push(async () => {
      peer.close();
      await conn.close();
    });
    await peer.request(VERSION);
    const huge = P.encodeRegionWriteRequest(7, 0n, 0, new Uint8Array(16 * MiB));
    const rss0 = process.memoryUsage.rss();
    let peak = 0;
    for (let i = 0; i < 50; i++) {
      // RawPeer's channel only reads this fd; the big writes go around it.
      expect(await put(b, huge)).toBe(true);
      const r = await peer.next();
      expect(r?.header).toMatchObject({ id: 7, flags: HeaderFlag.TYPE_REPLY | HeaderFlag.ERROR, error: Errno.EINVAL });
      peak = Math.max(peak, process.memoryUsage.rss() - rss0);
    }
    expect(conn.state).toBe('ready');
    expect(peak).toBeLessThan(64 * MiB);
    const ok = await peer.request(P.encodeDeviceInfoRequest(8));
    expect(ok.header.flags).toBe(HeaderFlag.TYPE_REPLY);
  });
});

describe('bounds: server-to-client DMA requests', () => {
  it('at most 65536 in flight (one per message id): the next is EAGAIN, all end with ENOTCONN on disconnect', async () => {
    const ep = new TestEndpoint();
    const [a, b] = native.socketpair();
    const conn = new Connection(a, ep, silentLogger, { dmaTimeoutMs: 60_000 });
    const peer = new RawPeer(b);
    cleanup.push(async () => {
      peer.close();
      await conn.close();
    });
    await peer.request(VERSION);
    // The client reads our requests and never answers one.
    const pending = Array.from({ length: 65536 }, () => ep.port!.dmaRead(0x1000n, 8));
    const settled = Promise.allSettled(pending);
    await expect(ep.port!.dmaRead(0x1000n, 8)).rejects.toMatchObject({ errno: Errno.EAGAIN });
    peer.close();
    await conn.closed;
    const results = await settled;
    expect(
      results.every((r) => r.status === 'rejected' && (r.reason as { errno: number }).errno === Errno.ENOTCONN),
    ).toBe(true);
  });
});

describe('bounds: IRQ eventfds', () => {
  it('at most one per vector: 500 rounds of fresh eventfds for every vector leave the open fds flat', async () => {
    const run = await startDevice();
    cleanup.push(() => run.stop());
    const c = await run.connect();
    const vectors = (await c.getIrqInfo(PciIrq.MSIX)).count;
    expect(vectors).toBeGreaterThan(0);
    await c.enableIrqs(PciIrq.MSIX, vectors);
    await c.enableIrqs(PciIrq.INTX, 1);
    const base = openFdCount();
    for (let i = 0; i < 500; i++) {
      // The client replaces its own eventfds too: each round, every installed one is new.
      await c.enableIrqs(PciIrq.MSIX, vectors);
      await c.enableIrqs(PciIrq.INTX, 1);
    }
    expect(openFdCount() - base).toBeLessThanOrEqual(2);
  });
});

describe('bounds: logging', () => {
  it('a client that hangs up with 500 requests in flight costs two lines, not one per lost reply', async () => {
    const { log, lines } = captureLog('info');
    const ep = new TestEndpoint();
    const [a, b] = native.socketpair();
    const conn = new Connection(a, ep, log);
    await put(b, VERSION);
    while (conn.state === 'version') await tick();
    const burst = new Uint8Array(500 * 32);
    for (let i = 0; i < 500; i++)
      burst.set(P.encodeRegionReadRequest(10 + i, { offset: 0n, region: PciRegion.BAR0, count: 16 }), i * 32);
    await put(b, burst);
    native.closeFd(b);
    await conn.closed;
    await logFlushed();
    expect(lines.filter((l) => l.level >= 40)).toEqual([]);
    expect(lines.map((l) => l.msg)).toEqual(['client connected', 'version negotiated', 'client disconnected']);
  });
});
