import { describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { fstatSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { native } from '../../native/index.js';
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';
import { tempSocketPath } from '../helpers/temp.js';
import { Recorder, message } from './channel-helpers.js';

noFdLeakEachTest();

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
const TSX_LOADER = pathToFileURL(join(process.cwd(), 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;

describe('native fds', () => {
  it('eventfd: write, read, watchReadable', async () => {
    const fd = native.eventfd();
    expect(native.eventfdRead(fd)).toBe(0);
    native.eventfdWrite(fd);
    native.eventfdWrite(fd, 41);
    expect(native.eventfdRead(fd)).toBe(42);
    expect(native.eventfdRead(fd)).toBe(0);

    const values: number[] = [];
    let wake: () => void = () => {};
    const watcher = native.watchReadable(fd, () => {
      values.push(native.eventfdRead(fd));
      wake();
    });
    const fired = new Promise<void>((r) => (wake = r));
    native.eventfdWrite(fd, 5);
    await fired;
    expect(values).toEqual([5]);
    watcher.close();
    watcher.close();
    native.eventfdWrite(fd, 1); // no longer watched: nothing is called
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
    expect(values).toEqual([5]);
    expect(native.eventfdRead(fd)).toBe(1);
    native.closeFd(fd);
    expect(() => native.eventfdWrite(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    const initial = native.eventfd(3);
    expect(native.eventfdRead(initial)).toBe(3);
    native.closeFd(initial);
  });

  it('a watcher polls its own dup: closing the fd first is harmless, and the fd number can be watched again', () => {
    // In a child process: polling a closed fd can make libuv abort().
    const child = spawnSync(process.execPath, ['--import', TSX_LOADER, join(FIXTURES, 'watch-closed-fd.ts')], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect({ status: child.status, signal: child.signal, stderr: child.stderr }).toEqual({
      status: 0,
      signal: null,
      stderr: '',
    });
    const seen = JSON.parse(child.stdout.trim().split('\n').pop()!) as {
      fd: number;
      reused: number;
      firstSeen: number[];
      secondSeen: number[];
    };
    expect(seen.reused).toBe(seen.fd); // the case the dup exists for
    expect(seen.firstSeen).toEqual([2, 3]); // the first watcher still sees its eventfd, and only it
    expect(seen.secondSeen).toEqual([5]);
  });

  it('listens, accepts and connects', async () => {
    const sock = tempSocketPath('native');
    const listenFd = native.listenUnix(sock.path, 4);
    expect(() => native.listenUnix(sock.path, 4)).toThrow(expect.objectContaining({ code: 'EADDRINUSE' }));
    const accepted: number[] = [];
    let wake: () => void = () => {};
    const watcher = native.watchListener(
      listenFd,
      (fd) => {
        accepted.push(fd);
        wake();
      },
      (reason) => {
        throw new Error(`listener error ${reason}`);
      },
    );
    const got = new Promise<void>((r) => (wake = r));
    const clientFd = native.connectUnix(sock.path);
    await got;
    expect(accepted).toHaveLength(1);
    const server = new Recorder(accepted[0]!);
    const client = new Recorder(clientFd);
    client.channel.send(message(3, 5));
    await server.messagesReceived(1);
    expect(server.messages[0]!.message.readUInt16LE(0)).toBe(3);
    client.dispose();
    server.dispose();
    watcher.close();
    native.closeFd(listenFd);
    expect(() => native.connectUnix(sock.path)).toThrow(expect.objectContaining({ code: 'ECONNREFUSED' }));
    sock.remove();
    expect(() => native.connectUnix(sock.path)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(() => native.listenUnix('/x'.repeat(100), 1)).toThrow(expect.objectContaining({ code: 'ENAMETOOLONG' }));
  });

  it('memfdCreate, dupFd, closeFd', () => {
    const fd = native.memfdCreate('sized', 12345);
    expect(fstatSync(fd).size).toBe(12345);
    const copy = native.dupFd(fd);
    expect(copy).not.toBe(fd);
    expect(fstatSync(copy).ino).toBe(fstatSync(fd).ino);
    native.closeFd(copy);
    native.closeFd(fd);
    expect(() => native.closeFd(fd)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'close' }));
    expect(() => native.closeFd(-1)).toThrow(RangeError);
    expect(() => native.dupFd(999_999)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});

describe('native listener under fd pressure', () => {
  it('reports EMFILE, pauses, then accepts once fds are available again', async () => {
    const sock = tempSocketPath('emfile');
    const listenFd = native.listenUnix(sock.path, 4);
    const errors: string[] = [];
    const accepted: number[] = [];
    let wake: () => void = () => {};
    const next = () => new Promise<void>((r) => (wake = r));
    const watcher = native.watchListener(
      listenFd,
      (fd) => {
        accepted.push(fd);
        wake();
      },
      (reason) => {
        errors.push(reason);
        wake();
      },
    );
    // Raising the limit again needs new fds (pipes), so a helper started now does it later.
    const { soft, hard } = getNofile();
    const restorer = spawn('sh', ['-c', `read x; exec prlimit --pid ${process.pid} --nofile=${soft}:${hard}`], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    const restored = new Promise((r) => restorer.once('exit', r));
    const probe = native.dupFd(0);
    native.closeFd(probe);
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${probe + 1}:${hard}`]);
    try {
      const clientFd = native.connectUnix(sock.path); // takes the last fd allowed
      const failed = next();
      await failed;
      expect(errors[0]).toMatch(/^EMFILE/);
      const accept = next();
      native.closeFd(clientFd); // frees a slot: the paused listener retries and accepts
      await accept;
      expect(accepted).toHaveLength(1);
      native.closeFd(accepted[0]!);
    } finally {
      restorer.stdin.end('\n');
      await restored;
    }
    expect(getNofile().soft).toBe(soft);
    watcher.close();
    native.closeFd(listenFd);
    sock.remove();
  });
});

function getNofile(): { soft: number; hard: number } {
  const out = execFileSync('prlimit', [
    '--pid',
    String(process.pid),
    '--nofile',
    '--raw',
    '--noheadings',
    '--output=SOFT,HARD',
  ])
    .toString()
    .trim()
    .split(/\s+/);
  return { soft: Number(out[0]), hard: Number(out[1]) };
}
