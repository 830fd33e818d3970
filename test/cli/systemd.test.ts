/**
 * The daemon under systemd, without systemd: the test does what the service
 * manager does. It binds the device sockets itself and passes them as fds 3
 * and 4 with LISTEN_PID (the daemon's own pid: set by `sh -c '... exec'`),
 * LISTEN_FDS and LISTEN_FDNAMES, and it binds the $NOTIFY_SOCKET datagram
 * socket (abstract, as systemd's is) and reads the notifications: READY=1
 * once the devices serve, STATUS, STOPPING=1 on SIGTERM. Clients reach the
 * devices through the passed sockets, whose files stay when the daemon stops.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { existsSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import { VfioUserClient } from '../../client/index.js';
import { PciRegion } from '../../protocol/constants.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { MAIN, ROOT } from './daemon-process.js';

const DEMO = join(ROOT, 'test', 'cli', 'fixtures', 'demo-device.ts');
const TSX_LOADER = pathToFileURL(join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;

/**
 * A datagram socket bound like systemd's NOTIFY_SOCKET (Node has none: a
 * small python3 reader prints each datagram as one JSON string per line).
 */
function notifyListener(name: string): {
  messages: string[];
  ready: Promise<void>;
  next(match: RegExp): Promise<string>;
  stop(): void;
} {
  const child = spawn(
    'python3',
    [
      '-u',
      '-c',
      `import socket, json, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + sys.argv[1])
print(json.dumps("bound"), flush=True)
while True:
    print(json.dumps(s.recv(4096).decode()), flush=True)`,
      name,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const messages: string[] = [];
  const waiters: (() => void)[] = [];
  let buffered = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const l of lines) messages.push(JSON.parse(l) as string);
    for (const w of waiters.splice(0)) w();
  });
  const next = (match: RegExp): Promise<string> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no notification ${match} in ${JSON.stringify(messages)}`)),
        30_000,
      );
      const check = (): void => {
        const m = messages.find((x) => match.test(x));
        if (m !== undefined) {
          clearTimeout(timer);
          resolve(m);
        } else waiters.push(check);
      };
      check();
    });
  return { messages, ready: next(/^bound$/).then(() => undefined), next, stop: () => child.kill('SIGKILL') };
}

let dir: TempDir;
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
  dir.remove();
});

async function readMagic(socketPath: string): Promise<number> {
  const client = await VfioUserClient.connect(socketPath, { timeoutMs: 5000 });
  try {
    return await client.barRead32(PciRegion.BAR0, 0);
  } finally {
    client.close();
  }
}

describe('vfio-user-ts serve under systemd', { timeout: 60_000 }, () => {
  it('takes the sockets systemd passes (by name, or by path), reports READY/STATUS/STOPPING, leaves the socket files', async () => {
    dir = tempDir('vfu-sd-');
    const byName = dir.file('by-name.sock');
    const byPath = dir.file('by-path.sock');
    // What a .socket unit does: bind and listen before the service starts.
    const fdA = native.listenUnix(byName, 16);
    const fdB = native.listenUnix(byPath, 16);
    const notifyName = `vfu-test-notify-${process.pid}-${Date.now()}`;
    const notify = notifyListener(notifyName);
    cleanups.push(() => notify.stop());
    await notify.ready;

    const config = JSON.stringify({
      devices: [
        { type: DEMO, name: 'alpha', socket: byName, options: { magic: 0xa1 } },
        { type: DEMO, name: 'beta', socket: byPath, options: { magic: 0xb2 } },
      ],
    });
    const configFile = dir.file('devices.json');
    writeFileSync(configFile, config);
    // LISTEN_PID must be the daemon's pid: the shell sets it to its own and execs node.
    const command = `LISTEN_PID=$$ exec "${process.execPath}" --import ${TSX_LOADER} ${MAIN} serve --config ${configFile} --log-format json`;
    const child: ChildProcess = spawn('sh', ['-c', command], {
      cwd: ROOT,
      env: {
        ...process.env,
        LOG_LEVEL: 'info',
        TSX_TSCONFIG_PATH: join(ROOT, 'tsconfig.json'),
        LISTEN_FDS: '2',
        // The first socket is named after its device; the second keeps systemd's default name.
        LISTEN_FDNAMES: 'alpha:vfio-user-ts.socket',
        NOTIFY_SOCKET: `@${notifyName}`,
      },
      stdio: ['ignore', 'pipe', 'pipe', fdA, fdB],
    });
    // The child has its own copies now (fds 3 and 4), as after systemd's fork.
    native.closeFd(fdA);
    native.closeFd(fdB);
    let stdout = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    cleanups.push(() => child.kill('SIGKILL'));

    const ready = await notify.next(/READY=1/);
    expect(ready).toMatch(/^READY=1\nSTATUS=serving 2 device\(s\): alpha, beta$/);
    expect(await readMagic(byName)).toBe(0xa1);
    expect(await readMagic(byPath)).toBe(0xb2);
    const records = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; device?: string; activated?: boolean });
    expect(records.filter((r) => r.msg === 'device ready' && r.activated).map((r) => r.device)).toEqual([
      'alpha',
      'beta',
    ]);

    child.kill('SIGTERM');
    expect(await notify.next(/STOPPING=1/)).toBe('STOPPING=1\nSTATUS=stopping (SIGTERM)');
    expect(await exited).toBe(0);
    // The socket files are systemd's: still there for the next start.
    expect(existsSync(byName)).toBe(true);
    expect(existsSync(byPath)).toBe(true);
    expect(stderr).toContain('vfio-user-ts is serving:');
  });
});
