/**
 * The channel's receive/send windows (native/channel-windows.ts): small
 * messages travel through per-channel buffers, yet every delivered message is
 * still a fresh Buffer of its own, big messages still work, send() reports the
 * backlog, and the raw addon (no windows) keeps its old behaviour.
 */
import { describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { readSync, writeSync } from 'node:fs';
import { native, type NativeBinding } from '../../native/index.js';
import { RECEIVE_WINDOW_SIZE, SEND_WINDOW_SIZE } from '../../native/channel-windows.js';
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';
import { Recorder, message } from './channel-helpers.js';

noFdLeakEachTest();

/** The addon as loaded without the windows wrapper. */
function rawAddon(): NativeBinding {
  const file = process.env.VFIO_USER_NATIVE_ADDON ?? join(process.cwd(), 'build', 'Release', 'vfio_user_native.node');
  return createRequire(import.meta.url)(file) as NativeBinding;
}

/** Read exactly `n` bytes from a blocking-or-not fd, retrying EAGAIN on the next turn. */
async function readExactly(fd: number, n: number): Promise<Buffer> {
  const out = Buffer.alloc(n);
  let got = 0;
  while (got < n) {
    try {
      got += readSync(fd, out, got, n - got, null);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      await new Promise((r) => setImmediate(r));
    }
  }
  return out;
}

describe('channel windows', () => {
  it('delivers each message as a fresh, unaliased Buffer of its own, small or larger than the window', async () => {
    const [a, b] = native.socketpair();
    const right = new Recorder(b, { maxMessageSize: 2 * RECEIVE_WINDOW_SIZE, maxFds: 1 });
    const sizes = [0, 4, 48, 200, RECEIVE_WINDOW_SIZE - 16, RECEIVE_WINDOW_SIZE, RECEIVE_WINDOW_SIZE + 1000];
    const sent = sizes.map((s, i) => message(i + 1, s, 0x10 + i));
    const left = new Recorder(a);
    for (const m of sent) left.channel.send(m);
    await right.messagesReceived(sent.length);
    right.messages.forEach(({ message: got, fds }, i) => {
      expect(Buffer.isBuffer(got)).toBe(true);
      expect(got.equals(sent[i]!)).toBe(true);
      expect(got.byteOffset).toBe(0);
      expect(got.buffer.byteLength).toBe(got.length);
      expect(fds).toEqual([]);
    });
    // Scribbling on one message changes no other (no shared window behind them).
    right.messages[0]!.message.fill(0xee);
    expect(right.messages[1]!.message.equals(sent[1]!)).toBe(true);
    left.dispose();
    right.dispose();
  });

  it('sends small, window-sized and larger messages byte-exact, with fds on the right one', async () => {
    const [a, b] = native.socketpair();
    const left = new Recorder(a);
    const right = new Recorder(b, { maxMessageSize: 2 * SEND_WINDOW_SIZE, maxFds: 2 });
    const memfd = native.memfdCreate('win', 4096);
    const sent = [message(1, 4), message(2, SEND_WINDOW_SIZE - 16), message(3, SEND_WINDOW_SIZE + 5), message(4, 60)];
    for (const [i, m] of sent.entries()) left.channel.send(m, i === 3 ? [memfd] : undefined);
    // A subarray view (byteOffset != 0) goes through the window too.
    const framed = Buffer.concat([Buffer.alloc(3, 0xaa), message(5, 8)]);
    left.channel.send(framed.subarray(3));
    await right.messagesReceived(5);
    expect(right.messages.map((m) => m.message.equals(m.message.readUInt16LE(0) === 5 ? framed.subarray(3) : sent[m.message.readUInt16LE(0) - 1]!))).toEqual([
      true, true, true, true, true,
    ]);
    expect(right.messages.map((m) => m.fds.length)).toEqual([0, 0, 0, 1, 0]);
    native.closeFd(memfd);
    left.dispose();
    right.dispose();
  });

  it('send() returns the bytes still queued; errors stay those of the addon', async () => {
    const [a, b] = native.socketpair();
    const left = new Recorder(a);
    const chunk = message(7, 4000);
    let backlog = 0;
    let sends = 0;
    while (backlog === 0 && sends < 10_000) {
      backlog = left.channel.send(chunk);
      sends++;
    }
    expect(backlog).toBeGreaterThan(0);
    expect(backlog).toBe(left.channel.pendingBytes);
    expect(left.channel.send(message(8, 4))).toBe(backlog + 20);
    // Drain the peer until the channel's queue has gone out.
    await readExactly(b, sends * chunk.length + 20);
    expect(left.channel.pendingBytes).toBe(0);
    expect(left.channel.send(message(9))).toBe(0);
    await readExactly(b, 16);

    expect(() => left.channel.send(5 as unknown as Uint8Array)).toThrow(TypeError);
    expect(() => left.channel.send(message(1), [-1])).toThrow(RangeError);
    left.dispose();
    expect(() => left.channel.send(message(1))).toThrow(expect.objectContaining({ code: 'EPIPE' }));
    native.closeFd(b);
  });

  it('the raw addon without windows still delivers Buffers and fd arrays', async () => {
    const raw = rawAddon();
    const [a, b] = raw.socketpair();
    const got: Array<{ message: unknown; fds: unknown }> = [];
    const ch = raw.openChannel(b, { maxMessageSize: 4096, maxFds: 1 }, (m, fds) => got.push({ message: m, fds }), () => undefined);
    writeSync(a, message(3, 4));
    while (got.length < 1) await new Promise((r) => setImmediate(r));
    expect(Buffer.isBuffer(got[0]!.message)).toBe(true);
    expect((got[0]!.message as Buffer).equals(message(3, 4))).toBe(true);
    expect(got[0]!.fds).toEqual([]);
    const sendFromWindow = (ch as unknown as { sendFromWindow(n: number): number }).sendFromWindow;
    expect(() => sendFromWindow.call(ch, 4)).toThrow(TypeError); // no send window on this channel
    expect(ch.send(message(4))).toBe(0);
    expect((await readExactly(a, 16)).equals(message(4))).toBe(true);
    ch.close();
    raw.closeFd(a);
  });
});
