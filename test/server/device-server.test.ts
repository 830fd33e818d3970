import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import { DeviceServer, serve } from '../../server/server.js';
import * as P from '../../protocol/index.js';
import { RawPeer } from './raw-peer.js';
import { TestEndpoint } from './test-endpoint.js';

const dirs: string[] = [];
const servers: DeviceServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function sockPath(): string {
  const d = mkdtempSync(join(tmpdir(), 'vfu-srv-'));
  dirs.push(d);
  return join(d, 'dev.sock');
}

async function start(path: string, ep = new TestEndpoint()): Promise<DeviceServer> {
  const s = await serve(ep, { socketPath: path });
  servers.push(s);
  return s;
}

function version(peer: RawPeer): Promise<unknown> {
  return peer.request(P.encodeVersionRequest(1, { major: 0, minor: 0, json: '{"capabilities":{"max_msg_fds":16}}' }));
}

describe('DeviceServer', () => {
  it('serves a client, and the next one after a disconnect', async () => {
    const path = sockPath();
    const ep = new TestEndpoint();
    const server = await start(path, ep);
    const a = RawPeer.connect(path);
    await version(a);
    expect(ep.attaches).toBe(1);
    const gone = new Promise((r) => server.once('disconnect', r));
    a.close();
    await gone;
    expect(ep.detaches).toBe(1);
    const b = RawPeer.connect(path);
    await version(b);
    expect(ep.attaches).toBe(2);
    b.close();
  });

  it('turns a second concurrent client away with EBUSY on its VERSION, leaving the first alone', async () => {
    const path = sockPath();
    const ep = new TestEndpoint();
    const server = await start(path, ep);
    const a = RawPeer.connect(path);
    await version(a);
    const rejected = new Promise<string>((r) => server.once('rejected', r));
    const b = RawPeer.connect(path);
    b.send(P.encodeVersionRequest(7, { major: 0, minor: 0, json: '{}' }));
    expect(await rejected).toBe('a client is already attached');
    // The answer QEMU reports as "version reply: Device or resource busy", then the close.
    const reply = await b.next();
    expect(reply?.header).toMatchObject({ id: 7, command: P.VfioUserCommand.VERSION, error: P.Errno.EBUSY });
    expect(reply!.header.flags & P.HeaderFlag.ERROR).toBeTruthy();
    expect(await b.waitClosed()).toMatch(/EOF|ECONNRESET/);
    const r = (await a.request(P.encodeDeviceInfoRequest(2))) as { header: P.MessageHeader };
    expect(r.header.command).toBe(P.VfioUserCommand.DEVICE_GET_INFO);
    expect(ep.attaches).toBe(1);
    a.close();
  });

  it('closes a turned-away client that never sends anything', async () => {
    const path = sockPath();
    const server = await start(path);
    const a = RawPeer.connect(path);
    await version(a);
    const rejected = new Promise((r) => server.once('rejected', r));
    const b = RawPeer.connect(path);
    await rejected;
    expect(await b.waitClosed(3000)).toMatch(/EOF|ECONNRESET/);
    a.close();
  });

  it('a client that reconnects at once is served (its old connection is detached first)', async () => {
    const path = sockPath();
    const ep = new TestEndpoint();
    const server = await start(path, ep);
    let rejected = 0;
    server.on('rejected', () => rejected++);
    for (let i = 1; i <= 5; i++) {
      const c = RawPeer.connect(path);
      await version(c);
      expect(ep.attaches).toBe(i);
      c.close(); // and connect again right away
    }
    const last = RawPeer.connect(path);
    await version(last);
    expect(rejected).toBe(0);
    expect(ep.detaches).toBe(5);
    last.close();
  });

  it('replaces a stale socket file, refuses a live one and a non-socket', async () => {
    const path = sockPath();
    const fd = native.listenUnix(path, 1);
    native.closeFd(fd); // the file stays: stale
    expect(existsSync(path)).toBe(true);
    const s = await start(path);
    await expect(serve(new TestEndpoint(), { socketPath: path })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    expect(s.listening).toBe(true);
    const other = sockPath();
    writeFileSync(other, 'x');
    await expect(serve(new TestEndpoint(), { socketPath: other })).rejects.toMatchObject({ code: 'EEXIST' });
  });

  it('close() drops the client, detaches and removes the socket file', async () => {
    const path = sockPath();
    const ep = new TestEndpoint();
    const server = await start(path, ep);
    const a = RawPeer.connect(path);
    await version(a);
    await server.close();
    expect(ep.detaches).toBe(1);
    expect(existsSync(path)).toBe(false);
    expect(await a.waitClosed()).toBe('EOF');
  });
});
