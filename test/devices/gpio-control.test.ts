/** The GPIO control socket (JSON lines over a real UNIX socket) and the CLI client function. */
import { createConnection, createServer } from 'node:net';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Idio16 } from '../../devices/gpio/idio16.js';
import { Idio16Reg } from '../../devices/gpio/registers.js';
import {
  GpioControlClient,
  MAX_LINE,
  defaultControlPath,
  gpioControlRequest,
  runGpioCli,
  startGpioControl,
  type GpioControlServer,
} from '../../devices/gpio/control.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { spawnSync } from 'node:child_process';

/** Raw exchange: send `text`, collect reply lines until `lines` arrived or the peer closed. */
function exchange(path: string, text: string, lines: number): Promise<{ lines: unknown[]; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let buffered = '';
    const got: unknown[] = [];
    socket.setEncoding('utf8');
    socket.on('error', reject);
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      let i;
      while ((i = buffered.indexOf('\n')) >= 0) {
        got.push(JSON.parse(buffered.slice(0, i)));
        buffered = buffered.slice(i + 1);
      }
      if (got.length >= lines) {
        socket.destroy();
        resolve({ lines: got, closed: false });
      }
    });
    socket.on('end', () => resolve({ lines: got, closed: true }));
    socket.write(text);
  });
}

function cli(args: string[], signal?: AbortSignal): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  return runGpioCli(args, { stdout: (t) => (out += t), stderr: (t) => (err += t), ...(signal ? { signal } : {}) }).then(
    (code) => ({ code, out, err }),
  );
}

describe('gpio control socket', () => {
  let dir: TempDir;
  let gpio: Idio16;
  let server: GpioControlServer;
  let path: string;

  beforeEach(async () => {
    dir = tempDir('vfu-gpio-');
    gpio = new Idio16();
    path = defaultControlPath(dir.file('gpio.sock'));
    server = await startGpioControl(gpio, path);
  });
  afterEach(async () => {
    await server.close();
    dir.remove();
  });

  it('is a 0600 socket next to the device socket, removed on close', async () => {
    expect(path).toBe(dir.file('gpio.sock.control'));
    expect(statSync(path).isSocket()).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    await server.close();
    expect(existsSync(path)).toBe(false);
  });

  it('get, set a line and set all inputs', async () => {
    gpio.writeRegister(Idio16Reg.OUT0_7, 0x81);
    expect(await gpioControlRequest(path, { op: 'get' })).toMatchObject({ outputs: 0x81, inputs: 0 });
    expect(await gpioControlRequest(path, { op: 'set', line: 3, value: 1 })).toMatchObject({ inputs: 0x8 });
    expect(await gpioControlRequest(path, { op: 'set', inputs: 0xf0f0 })).toMatchObject({ inputs: 0xf0f0 });
    expect(gpio.getInputs()).toBe(0xf0f0);
  });

  it('answers hostile requests with errors and keeps serving', async () => {
    const bad = [
      'not json',
      '[]',
      '{"op":"fly"}',
      '{"op":"set"}',
      '{"op":"set","line":16,"value":1}',
      '{"op":"set","line":"3","value":1}',
      '{"op":"set","line":3,"value":7}',
      '{"op":"set","inputs":65536}',
      '{"op":"set","inputs":-1}',
      '{"op":"get","id":42}',
    ];
    const { lines } = await exchange(path, `${bad.join('\n')}\n`, bad.length);
    expect(lines.slice(0, -1).every((l) => (l as { ok?: boolean }).ok === false)).toBe(true);
    expect(lines.at(-1)).toMatchObject({ ok: true, id: 42 });
    expect(gpio.getInputs()).toBe(0);
  });

  it('closes a connection whose request line is too long', async () => {
    const { lines, closed } = await exchange(path, 'x'.repeat(MAX_LINE * 2), 2);
    expect(closed).toBe(true);
    expect(lines).toEqual([{ ok: false, error: `request longer than ${MAX_LINE} bytes` }]);
    expect(await gpioControlRequest(path, { op: 'get' })).toMatchObject({ outputs: 0 });
  });

  it('watch streams output changes, input changes and interrupts', async () => {
    const client = await GpioControlClient.connect(path);
    const events: unknown[] = [];
    client.onEvent = (e) => events.push(e);
    await client.request({ op: 'watch' });
    gpio.readRegister(Idio16Reg.IRQ_CTL);
    gpio.writeRegister(Idio16Reg.OUT8_15, 0x12);
    gpio.setInput(0, 1);
    await client.request({ op: 'get' }); // replies come after the events sent before them
    client.close();
    expect(events).toEqual([
      { event: 'outputs', outputs: 0x1200, previous: 0 },
      { event: 'inputs', inputs: 1, previous: 0 },
      { event: 'interrupt' },
    ]);
    expect(gpio.listenerCount('outputs')).toBeLessThanOrEqual(1);
  });

  it('drops a watcher that never reads its events', async () => {
    const socket = createConnection(path);
    await new Promise<void>((r) => socket.once('connect', () => r()));
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('error', () => undefined);
    socket.write('{"op":"watch"}\n');
    while (gpio.listenerCount('outputs') === 0) await new Promise((r) => setTimeout(r, 5));
    socket.pause();
    for (let i = 0; i < 100_000 && gpio.listenerCount('outputs') > 0; i++) {
      gpio.writeRegister(Idio16Reg.OUT0_7, i & 0xff);
      if (i % 1000 === 0) await new Promise((r) => setImmediate(r));
    }
    expect(gpio.listenerCount('outputs')).toBe(0);
    socket.resume();
    await closed;
  });

  it('replaces a stale socket file but refuses a live one', async () => {
    const stale = dir.file('stale.sock');
    const s = createServer();
    await new Promise<void>((r) => s.listen(stale, r));
    await expect(startGpioControl(gpio, stale)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    await new Promise<void>((r) => s.close(() => r()));
    // A socket file whose listener died (a SIGKILLed process leaves the file behind).
    const dead = dir.file('dead.sock');
    const listenAndDie = `require('net').createServer().listen(${JSON.stringify(dead)}, () => process.kill(process.pid, 'SIGKILL'))`;
    spawnSync(process.execPath, ['-e', listenAndDie]);
    expect(statSync(dead).isSocket()).toBe(true);
    const again = await startGpioControl(gpio, dead);
    expect(await gpioControlRequest(dead, { op: 'get' })).toMatchObject({ outputs: 0 });
    await again.close();
    const plain = dir.file('plain');
    writeFileSync(plain, 'x');
    await expect(startGpioControl(gpio, plain)).rejects.toMatchObject({ code: 'EEXIST' });
  });

  it('CLI: get, set, watch and usage errors', async () => {
    expect(await cli(['get', '--control', path])).toEqual({
      code: 0,
      out: 'outputs=0x0000 inputs=0x0000 irq=disabled pending=no filters=active interrupts=0\n',
      err: '',
    });
    const set = await cli(['set', '--control', path, 'IIN0=1', '15=high', '--json']);
    expect(set.code).toBe(0);
    expect(JSON.parse(set.out)).toMatchObject({ inputs: 0x8001 });
    expect((await cli(['set', '--control', path, '--inputs', '0x00ff'])).code).toBe(0);
    expect(gpio.getInputs()).toBe(0x00ff);

    const watching = cli(['watch', '--control', path, '--count', '2']);
    // The watch request is answered before events flow: wait for the subscription.
    while (gpio.listenerCount('outputs') === 0) await new Promise((r) => setTimeout(r, 5));
    gpio.writeRegister(Idio16Reg.OUT0_7, 1);
    gpio.writeRegister(Idio16Reg.OUT0_7, 3);
    const watched = await watching;
    expect(watched.code).toBe(0);
    expect(watched.out.split('\n').slice(1, 3)).toEqual([
      'outputs=0x0001 previous=0x0000',
      'outputs=0x0003 previous=0x0001',
    ]);

    expect((await cli(['set', '--control', path, 'IIN16=1'])).code).toBe(1);
    expect((await cli(['set', '--control', path])).code).toBe(2);
    expect((await cli(['get'])).code).toBe(2);
    expect((await cli(['frob', '--control', path])).code).toBe(2);
    expect((await cli(['get', '--control', dir.file('nothing')])).code).toBe(1);
  });
});
