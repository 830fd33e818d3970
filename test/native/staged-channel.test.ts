/**
 * The channel's receive/send staging buffers (native/staged-channel.ts):
 * small messages travel through per-channel buffers, yet every delivered
 * message is still a fresh Buffer of its own, big messages still work, send()
 * reports the backlog, and the addon refuses a channel without the buffers.
 */
import { describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { readSync, writeSync } from 'node:fs';
import { native } from '../../native/index.js';
import type { AddonBinding } from '../../native/types.js';
import { RECEIVE_STAGING_SIZE, SEND_STAGING_SIZE } from '../../native/staged-channel.js';
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';
import { Recorder, message } from './channel-helpers.js';

noFdLeakEachTest();

/** The addon as loaded, without the StagedChannel around its channels. */
function rawAddon(): AddonBinding {
  const file = process.env.VFIO_USER_NATIVE_ADDON ?? join(process.cwd(), 'build', 'Release', 'vfio_user_native.node');
  return createRequire(import.meta.url)(file) as AddonBinding;
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

describe('channel staging buffers', () => {
  it('delivers each message as a fresh, unaliased Buffer of its own, small or larger than the window', async () => {
    const [a, b] = native.socketpair();
    const right = new Recorder(b, { maxMessageSize: 2 * RECEIVE_STAGING_SIZE, maxFds: 1 });
    const sizes = [0, 4, 48, 200, RECEIVE_STAGING_SIZE - 16, RECEIVE_STAGING_SIZE, RECEIVE_STAGING_SIZE + 1000];
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
    // Scribbling on one message changes no other (no shared staging buffer behind them).
    right.messages[0]!.message.fill(0xee);
    expect(right.messages[1]!.message.equals(sent[1]!)).toBe(true);
    left.dispose();
    right.dispose();
  });

  it('sends small, window-sized and larger messages byte-exact, with fds on the right one', async () => {
    const [a, b] = native.socketpair();
    const left = new Recorder(a);
    const right = new Recorder(b, { maxMessageSize: 2 * SEND_STAGING_SIZE, maxFds: 2 });
    const memfd = native.memfdCreate('staged', 4096);
    const sent = [message(1, 4), message(2, SEND_STAGING_SIZE - 16), message(3, SEND_STAGING_SIZE + 5), message(4, 60)];
    for (const [i, m] of sent.entries()) left.channel.send(m, i === 3 ? [memfd] : undefined);
    // A subarray view (byteOffset != 0) goes through the staging buffer too.
    const framed = Buffer.concat([Buffer.alloc(3, 0xaa), message(5, 8)]);
    left.channel.send(framed.subarray(3));
    await right.messagesReceived(5);
    expect(
      right.messages.map((m) =>
        m.message.equals(m.message.readUInt16LE(0) === 5 ? framed.subarray(3) : sent[m.message.readUInt16LE(0) - 1]!),
      ),
    ).toEqual([true, true, true, true, true]);
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

  it('the addon delivers small messages as lengths in the staging buffer, large ones as Buffers, fds undefined when none', async () => {
    const raw = rawAddon();
    const [a, b] = raw.socketpair();
    const rx = new ArrayBuffer(64);
    const tx = new ArrayBuffer(64);
    const got: Array<{ message: number | Buffer; staged: Buffer; fds: number[] | undefined }> = [];
    const ch = raw.openChannel(
      b,
      { maxMessageSize: 4096, maxFds: 1, receiveStaging: rx, sendStaging: tx },
      (m, fds) => got.push({ message: m, staged: Buffer.from(rx.slice(0)), fds }),
      () => undefined,
    );
    writeSync(a, Buffer.concat([message(3, 4), message(4, 100)]));
    while (got.length < 2) await new Promise((r) => setImmediate(r));
    expect(got[0]!.message).toBe(20);
    expect(got[0]!.staged.subarray(0, 20).equals(message(3, 4))).toBe(true);
    expect(got[0]!.fds).toBeUndefined();
    expect(Buffer.isBuffer(got[1]!.message) && got[1]!.message.equals(message(4, 100))).toBe(true);
    expect(got[1]!.fds).toBeUndefined();
    // sendStaged sends the first `length` bytes of the send staging buffer; more than it holds is a RangeError.
    new Uint8Array(tx).set(message(5, 8));
    expect(ch.sendStaged(24)).toBe(0);
    expect((await readExactly(a, 24)).equals(message(5, 8))).toBe(true);
    expect(() => ch.sendStaged(65)).toThrow(RangeError);
    ch.close();
    expect(() => ch.sendStaged(16)).toThrow(expect.objectContaining({ code: 'EPIPE' }));
    raw.closeFd(a);
  });

  it('the addon refuses a channel without staging buffers, leaving the fd to the caller', () => {
    const raw = rawAddon();
    const [a, b] = raw.socketpair();
    const open = (options: object) =>
      raw.openChannel(
        b,
        options as never,
        () => undefined,
        () => undefined,
      );
    expect(() => open({ maxMessageSize: 4096, maxFds: 1 })).toThrow(TypeError);
    expect(() =>
      open({ maxMessageSize: 4096, maxFds: 1, receiveStaging: new ArrayBuffer(15), sendStaging: new ArrayBuffer(8) }),
    ).toThrow(TypeError);
    expect(() =>
      open({ maxMessageSize: 4096, maxFds: 1, receiveStaging: new ArrayBuffer(16), sendStaging: new ArrayBuffer(0) }),
    ).toThrow(TypeError);
    raw.closeFd(b); // still ours: no channel took it
    raw.closeFd(a);
  });
});
