import { describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { native } from '../../native/index.js';
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';

noFdLeakEachTest();

const addon = join(process.cwd(), 'build', 'Release', 'vfio_user_native.node');

describe('native addon in worker threads', () => {
  it('tears down a Worker with open channels, watchers and mappings without crashing or leaking', async () => {
    const code = `
      const { parentPort } = require('node:worker_threads');
      const n = require(${JSON.stringify(addon)});
      const [a, b] = n.socketpair();
      n.openChannel(a, { maxMessageSize: 64, maxFds: 1, receiveStaging: new ArrayBuffer(64), sendStaging: new ArrayBuffer(64) }, () => {}, () => {});
      const e = n.eventfd();
      n.watchReadable(e, () => {});
      const l = n.listenUnix('\\0vfu-worker-' + process.pid + '-' + Math.random(), 1);
      n.watchListener(l, () => {}, () => {});
      const m = n.memfdCreate('worker', 4096);
      const map = n.mmapFd(m, 0, 4096, n.PROT_READ | n.PROT_WRITE);
      new Uint8Array(map.buffers[0])[0] = 1;
      parentPort.postMessage([b, e, l, m]);
    `;
    for (let i = 0; i < 2; i++) {
      const worker = new Worker(code, { eval: true });
      const jsOwned = await new Promise<number[]>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      await worker.terminate();
      expect(jsOwned).toHaveLength(4);
      for (const fd of jsOwned) native.closeFd(fd); // the fds the worker's JS owned; the addon closed its own
    }
  });
});
