import { describe, expect, it } from 'vitest';
import { fstatSync, readlinkSync, writeSync } from 'node:fs';
import { native } from '../../native/index.js';
import { listOpenFds } from '../helpers/fds.js';
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';
import { Recorder, message, turn } from './channel-helpers.js';

noFdLeakEachTest();

function inode(fd: number): number {
  return fstatSync(fd).ino;
}

/** This process's open fds on a memfd created with `name`. */
function memfdsNamed(name: string): number[] {
  return listOpenFds().filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(`/memfd:${name} `);
    } catch {
      return false;
    }
  });
}

describe('native channel', () => {
  it('round-trips messages with fds attached to the right message', async () => {
    const [a, b] = native.socketpair();
    const left = new Recorder(a);
    const right = new Recorder(b);
    const m1 = native.memfdCreate('m1', 4096);
    const m2 = native.memfdCreate('m2', 4096);
    const m3 = native.memfdCreate('m3', 4096);
    left.channel.send(message(1, 8));
    left.channel.send(message(2, 100), [m1]);
    left.channel.send(message(3));
    left.channel.send(message(4, 4), [m2, m3]);
    await right.messagesReceived(4);
    expect(right.messages.map((m) => m.message.readUInt16LE(0))).toEqual([1, 2, 3, 4]);
    expect(right.messages.map((m) => m.message.length)).toEqual([24, 116, 16, 20]);
    expect(right.messages[0]!.fds).toEqual([]);
    expect(right.messages[1]!.fds.map(inode)).toEqual([inode(m1)]);
    expect(right.messages[2]!.fds).toEqual([]);
    expect(right.messages[3]!.fds.map(inode)).toEqual([inode(m2), inode(m3)]);
    expect(right.messages[1]!.message.subarray(16).every((x) => x === 2)).toBe(true);

    right.channel.send(message(9, 3));
    await left.messagesReceived(1);
    expect(left.messages[0]!.message.readUInt16LE(0)).toBe(9);

    for (const fd of [m1, m2, m3]) native.closeFd(fd);
    left.dispose();
    right.dispose();
    expect(left.channel.closed).toBe(true);
  });

  it('splits many messages from one write and joins one message from many writes', async () => {
    const [a, b] = native.socketpair();
    const right = new Recorder(b);
    const batch = Buffer.concat(Array.from({ length: 50 }, (_, i) => message(i, i % 7)));
    expect(writeSync(a, batch)).toBe(batch.length);
    await right.messagesReceived(50);
    expect(right.messages.map((m) => m.message.readUInt16LE(0))).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(right.messages.every((m, i) => m.message.length === 16 + (i % 7))).toBe(true);

    const big = message(777, 300, 0xab);
    for (let i = 0; i < big.length; i += 7) {
      writeSync(a, big.subarray(i, Math.min(big.length, i + 7)));
      await turn();
    }
    await right.messagesReceived(51);
    expect(right.messages[50]!.message.equals(big)).toBe(true);
    native.closeFd(a);
    await right.closed();
    expect(right.closeReasons).toEqual(['EOF']);
    right.dispose();
  });

  it('drains nextTick and promise queues between messages', async () => {
    const [a, b] = native.socketpair();
    const order: string[] = [];
    let seen = 0;
    const channel = native.openChannel(
      b,
      { maxMessageSize: 4096, maxFds: 1 },
      (msg) => {
        const id = msg.readUInt16LE(0);
        order.push(`msg${id}`);
        process.nextTick(() => order.push(`tick${id}`));
        void Promise.resolve().then(() => order.push(`micro${id}`));
        seen++;
      },
      () => {},
    );
    writeSync(a, Buffer.concat([message(1), message(2), message(3)]));
    while (seen < 3) await turn();
    expect(order).toEqual(['msg1', 'tick1', 'micro1', 'msg2', 'tick2', 'micro2', 'msg3', 'tick3', 'micro3']);
    channel.close();
    native.closeFd(a);
  });

  it('delivers an oversize message as its header alone and keeps the stream in sync', async () => {
    const [a, b] = native.socketpair();
    const left = new Recorder(a);
    const right = new Recorder(b, { maxMessageSize: 64, maxFds: 2 });
    const memfd = native.memfdCreate('oversize', 4096);
    left.channel.send(message(1, 10_000, 0x55), [memfd]);
    left.channel.send(message(2, 48, 0x66));
    await right.messagesReceived(2);
    const [first, second] = right.messages;
    expect(first!.message.length).toBe(16);
    expect(first!.message.readUInt16LE(0)).toBe(1);
    expect(first!.message.readUInt32LE(4)).toBe(10_016);
    expect(first!.fds.map(inode)).toEqual([inode(memfd)]);
    expect(second!.message.equals(message(2, 48, 0x66))).toBe(true);
    expect(second!.fds).toEqual([]);
    native.closeFd(memfd);
    left.dispose();
    right.dispose();
  });

  it('delivers a header with size < 16 and then stops reading', async () => {
    const [a, b] = native.socketpair();
    const right = new Recorder(b);
    const bad = message(5);
    bad.writeUInt32LE(8, 4);
    writeSync(a, Buffer.concat([message(4), bad, message(6)]));
    await right.messagesReceived(2);
    for (let i = 0; i < 5; i++) await turn();
    expect(right.messages.map((m) => m.message.readUInt16LE(0))).toEqual([4, 5]);
    expect(right.messages[1]!.message.length).toBe(16);
    right.channel.send(message(7)); // replying still works
    right.dispose();
    native.closeFd(a);
  });

  it('closes the channel without leaking when the peer sends more fds than maxFds', async () => {
    const [a, b] = native.socketpair();
    const left = new Recorder(a);
    const right = new Recorder(b, { maxMessageSize: 4096, maxFds: 1 });
    const fds = [native.eventfd(), native.eventfd(), native.eventfd()];
    left.channel.send(message(1, 4), fds);
    await right.closed();
    expect(right.closeReasons).toHaveLength(1);
    expect(right.closeReasons[0]).toMatch(/^EFAULT/);
    expect(right.messages).toEqual([]);
    expect(right.channel.closed).toBe(true);
    expect(right.channel.fd).toBe(-1);
    await left.closed();
    expect(left.closeReasons).toEqual(['EOF']);
    for (const fd of fds) native.closeFd(fd);
    left.dispose();
    right.dispose();
  });

  it('treats two fds with maxFds 1 as too many even if the control buffer fits them', async () => {
    const [a, b] = native.socketpair();
    const left = new Recorder(a);
    const right = new Recorder(b, { maxMessageSize: 4096, maxFds: 1 });
    const fds = [native.eventfd(), native.eventfd()];
    left.channel.send(message(1), fds);
    await right.closed();
    expect(right.closeReasons[0]).toMatch(/^EFAULT/);
    for (const fd of fds) native.closeFd(fd);
    left.dispose();
  });

  it('closes the channel when one message accumulates more fds than maxFds over several writes', async () => {
    const [a, b] = native.socketpair();
    const left = new Recorder(a);
    const right = new Recorder(b, { maxMessageSize: 4096, maxFds: 2 });
    const whole = message(1, 200);
    const fds = [native.eventfd(), native.eventfd(), native.eventfd()];
    left.channel.send(whole.subarray(0, 50), [fds[0]!]);
    left.channel.send(whole.subarray(50, 100), [fds[1]!]);
    left.channel.send(whole.subarray(100, 150), [fds[2]!]);
    await right.closed();
    expect(right.closeReasons[0]).toMatch(/^EFAULT/);
    expect(right.messages).toEqual([]);
    for (const fd of fds) native.closeFd(fd);
    left.dispose();
  });

  it('reports EOF once, and never after close()', async () => {
    const [a, b] = native.socketpair();
    const right = new Recorder(b);
    native.closeFd(a);
    await right.closed();
    expect(right.closeReasons).toEqual(['EOF']);
    right.channel.close();
    right.channel.close();
    expect(() => right.channel.send(message(1))).toThrow(expect.objectContaining({ code: 'EPIPE' }));

    const [c, d] = native.socketpair();
    const other = new Recorder(d);
    other.channel.close();
    native.closeFd(c);
    for (let i = 0; i < 5; i++) await turn();
    expect(other.closeReasons).toEqual([]);
  });

  it('stops delivering when onMessage closes the channel', async () => {
    const [a, b] = native.socketpair();
    const left = new Recorder(a);
    const got: number[] = [];
    const closes: string[] = [];
    const memfd = native.memfdCreate('late', 4096);
    const channel = native.openChannel(
      b,
      { maxMessageSize: 4096, maxFds: 2 },
      (msg, fds) => {
        got.push(msg.readUInt16LE(0));
        for (const fd of fds) native.closeFd(fd);
        channel.close();
      },
      (reason) => closes.push(reason),
    );
    left.channel.send(Buffer.concat([message(1), message(2)]));
    left.channel.send(message(3), [memfd]);
    native.closeFd(memfd);
    await left.closed();
    for (let i = 0; i < 3; i++) await turn();
    expect(got).toEqual([1]);
    expect(closes).toEqual([]);
    left.dispose();
  });

  it('closes undelivered fds on close()', async () => {
    const [a, b] = native.socketpair();
    const right = new Recorder(b);
    const memfd = native.memfdCreate('partial', 4096);
    // A partial message carrying an fd: received, never delivered.
    const partial = message(1, 100).subarray(0, 40);
    const left = new Recorder(a);
    left.channel.send(partial, [memfd]);
    native.closeFd(memfd);
    for (let i = 0; i < 20 && memfdsNamed('partial').length === 0; i++) await turn();
    expect(memfdsNamed('partial')).toHaveLength(1); // only the receiving channel holds it now
    expect(right.messages).toEqual([]);
    right.channel.close();
    expect(memfdsNamed('partial')).toEqual([]);
    left.dispose();
  });

  it('queues what the socket does not take and keeps order (fds included)', async () => {
    const [a, b] = native.socketpair();
    const left = new Recorder(a);
    const chunk = 64 * 1024;
    let sent = 0;
    while (left.channel.pendingBytes === 0) left.channel.send(message(sent++, chunk - 16, sent & 0xff));
    const memfd = native.memfdCreate('queued', 4096);
    const withFd = sent;
    left.channel.send(message(sent++, 32), [memfd]);
    native.closeFd(memfd); // borrowed: the queue holds its own copy
    for (let i = 0; i < 5; i++) left.channel.send(message(sent++, 1000));
    expect(left.channel.pendingBytes).toBeGreaterThan(0);

    const right = new Recorder(b, { maxMessageSize: chunk, maxFds: 2 });
    await right.messagesReceived(sent);
    expect(right.messages.map((m) => m.message.readUInt16LE(0))).toEqual(Array.from({ length: sent }, (_, i) => i));
    expect(right.messages.map((m, i) => (m.fds.length > 0 ? i : -1)).filter((i) => i >= 0)).toEqual([withFd]);
    expect(right.messages[withFd]!.fds).toHaveLength(1);
    await left.until(() => left.channel.pendingBytes === 0, 'queue drained');
    left.dispose();
    right.dispose();
  });

  it('rejects bad arguments without taking the fd', () => {
    const memfd = native.memfdCreate('not-a-socket', 0);
    expect(() =>
      native.openChannel(
        memfd,
        { maxMessageSize: 4096, maxFds: 1 },
        () => {},
        () => {},
      ),
    ).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
    native.closeFd(memfd);
    const [a, b] = native.socketpair();
    expect(() =>
      native.openChannel(
        a,
        { maxMessageSize: 8, maxFds: 1 },
        () => {},
        () => {},
      ),
    ).toThrow(RangeError);
    const ch = native.openChannel(
      a,
      { maxMessageSize: 4096, maxFds: 1 },
      () => {},
      () => {},
    );
    expect(() => native.closeFd(a)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    expect(() => ch.send('x' as unknown as Uint8Array)).toThrow(TypeError);
    expect(() => ch.send(message(1), [999_999])).toThrow(expect.objectContaining({ code: 'EBADF' }));
    ch.close();
    native.closeFd(b);
  });
});
