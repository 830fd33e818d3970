import { describe, expect, it } from 'vitest';
import { writeSync } from 'node:fs';
import { native } from '../../native/index.js';
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';
import { Recorder, message, turn } from './channel-helpers.js';
import { seededRandom } from '../helpers/random.js';

noFdLeakEachTest();

describe('native channel framing', () => {
  it('frames a random stream cut at random points, oversize messages included', async () => {
    const random = seededRandom(1234);
    const max = 4096;
    const sent: Buffer[] = [];
    for (let i = 0; i < 300; i++) {
      const body = random() < 0.05 ? max + Math.floor(random() * 100_000) : Math.floor(random() * 600);
      sent.push(message(i, body, i & 0xff));
    }
    const stream = Buffer.concat(sent);
    const [a, b] = native.socketpair();
    const right = new Recorder(b, { maxMessageSize: max, maxFds: 1 });
    for (let at = 0; at < stream.length;) {
      const len = Math.min(stream.length - at, 1 + Math.floor(random() * 20_000));
      let written = 0;
      while (written < len) {
        try {
          written += writeSync(a, stream, at + written, len - written);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
          await turn();
        }
      }
      at += len;
      if (random() < 0.3) await turn();
    }
    await right.messagesReceived(sent.length);
    right.messages.forEach((got, i) => {
      const want = sent[i]!;
      if (want.length > max) expect(got.message.equals(want.subarray(0, 16))).toBe(true);
      else expect(got.message.equals(want)).toBe(true);
    });
    right.dispose();
    native.closeFd(a);
  });
});
