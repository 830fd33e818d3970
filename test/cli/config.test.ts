/**
 * Configuration: every error names the source (file or command line), the
 * field and what is wrong; the CLI exits 2 before starting anything.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { validateConfig } from '../../cli/config.js';
import { ConfigErrors } from '../../cli/config-error.js';
import { parseServeArgs } from '../../cli/serve-args.js';
import { parseSize } from '../../cli/size.js';
import { qemuDeviceOption } from '../../cli/qemu-hint.js';
import { tempDir, type TempDir } from '../helpers/temp.js';
import { ROOT, runToExit } from './daemon-process.js';

let dir: TempDir;
beforeEach(() => {
  dir = tempDir('vfu-cfg-');
});
afterEach(() => dir.remove());

function errorsOf(f: () => unknown): string[] {
  try {
    f();
  } catch (err) {
    if (err instanceof ConfigErrors) return err.errors.map((e) => e.message);
    throw err;
  }
  throw new Error('expected ConfigErrors');
}

describe('config file validation', () => {
  it('accepts a list or an object, resolves paths against the file, and names devices per kind', () => {
    const { config, errors } = validateConfig(
      {
        logLevel: 'debug',
        devices: [
          {
            type: 'nvme',
            socket: 'run/a.sock',
            options: { disk: 'data/a.img', size: '64M', lbaSize: 4096, serial: 'S1' },
          },
          {
            type: 'nvme',
            socket: 'run/b.sock',
            options: { namespaces: [{ size: 1048576 }, { disk: '/tmp/x.img', size: '2M' }] },
          },
          { type: 'gpio', socket: '/tmp/g.sock' },
          { type: 'gpio', name: 'lights', socket: '/tmp/h.sock', options: { control: false } },
        ],
      },
      '/etc/vfu/devices.json',
      '/etc/vfu',
    );
    expect(errors).toEqual([]);
    expect(config.logLevel).toBe('debug');
    expect(config.devices.map((d) => d.name)).toEqual(['nvme0', 'nvme1', 'gpio0', 'lights']);
    expect(config.devices[0]).toMatchObject({
      type: 'nvme',
      socket: '/etc/vfu/run/a.sock',
      namespaces: [{ path: '/etc/vfu/data/a.img', size: 64 << 20, lbaSize: 4096 }],
      serial: 'S1',
    });
    expect(config.devices[1]).toMatchObject({
      namespaces: [
        { size: 1 << 20, lbaSize: 512 },
        { path: '/tmp/x.img', size: 2 << 20 },
      ],
    });
    expect(config.devices[2]).toMatchObject({ type: 'gpio', control: '/tmp/g.sock.control' });
    expect(config.devices[3]).toMatchObject({ control: null });
    expect(validateConfig([{ type: 'gpio', socket: 'g.sock' }], 'f.json', '/x').errors).toEqual([]);
    const tuned = validateConfig(
      [
        { type: 'nvme', socket: 'n.sock', options: { size: '1M', pollMicros: 0, unsealedDmaFds: 'messages' } },
        { type: 'gpio', socket: 'g.sock', options: { unsealedDmaFds: 'refuse' } },
      ],
      'f.json',
      '/x',
    );
    expect(tuned.errors).toEqual([]);
    expect(tuned.config.devices[0]).toMatchObject({ pollMicros: 0, unsealedDmaFds: 'messages' });
    expect(tuned.config.devices[1]).toMatchObject({ unsealedDmaFds: 'refuse' });
  });

  it('reports every problem with its field', () => {
    const { errors } = validateConfig(
      {
        colour: 'blue',
        devices: [
          { type: 'nvme', socket: 'a.sock', options: { disk: 'a.img' } },
          { type: 'floppy', socket: 'b.sock' },
          { type: 'gpio' },
          {
            type: 'nvme',
            socket: 'c.sock',
            options: { size: '1.5K', lbaSize: 1024, queues: 0, model: 'x'.repeat(41) },
          },
          { type: 'gpio', socket: 'a.sock', extra: 1 },
          'nvme',
          { type: 'nvme', socket: `${'/very-long'.repeat(12)}/x.sock`, options: { size: '1G' } },
          { type: 'gpio', socket: 'd.sock', options: { disk: 'x' } },
          { type: './missing-device.js', socket: 'e.sock' },
          { type: 'nvme', socket: 'f.sock', options: { size: '1M', pollMicros: -1, unsealedDmaFds: 'yes' } },
        ],
      },
      'devices.json',
      dir.path,
    );
    const messages = errors.map((e) => e.message);
    const expected = [
      /^devices\.json: colour: unknown field/,
      /^devices\.json: devices\[0\]\.options\.size: is required: .*a\.img does not exist yet/,
      /^devices\.json: devices\[1\]\.type: unknown device type "floppy"/,
      /^devices\.json: devices\[2\]\.socket: is required/,
      /^devices\.json: devices\[3\]\.options\.lbaSize: must be 512 or 4096, got number 1024/,
      /^devices\.json: devices\[3\]\.options\.model: must be 1-40 printable ASCII/,
      /^devices\.json: devices\[3\]\.options\.queues: must be a whole number from 1 to 64/,
      /^devices\.json: devices\[4\]\.extra: unknown field/,
      /^devices\.json: devices\[5\]: must be an object/,
      /^devices\.json: devices\[6\]\.socket: .* bytes long; UNIX socket paths must be at most 107/,
      /^devices\.json: devices\[7\]\.options\.disk: unknown option \(expected one of control, unsealedDmaFds\)/,
      /^devices\.json: devices\[8\]\.type: device module .*missing-device\.js does not exist/,
      /^devices\.json: devices\[9\]\.options\.pollMicros: must be a whole number of microseconds from 0 \(off\) to 1000000/,
      /^devices\.json: devices\[9\]\.options\.unsealedDmaFds: must be one of "map", "messages", "refuse", got/,
    ];
    for (const pattern of expected)
      expect(
        messages.some((m) => pattern.test(m)),
        `${pattern}\n${messages.join('\n')}`,
      ).toBe(true);
    // devices[4] reuses a.sock, but it is reported only once devices[4] is otherwise valid.
    expect(errors.every((e) => e.source === 'devices.json')).toBe(true);
  });

  it('rejects duplicate names, sockets and disks', () => {
    const { errors } = validateConfig(
      [
        { type: 'gpio', name: 'x', socket: 'a.sock' },
        { type: 'gpio', name: 'x', socket: 'a.sock' },
        { type: 'nvme', socket: 'n1.sock', options: { disk: 'd.img', size: '1M' } },
        { type: 'nvme', socket: 'n2.sock', options: { disk: 'd.img', size: '1M' } },
      ],
      'f.json',
      '/srv',
    );
    expect(errors.map((e) => `${e.field}: ${e.problem}`)).toEqual([
      'devices[1].name: name "x" is already used by devices[0].name',
      'devices[1].socket: socket /srv/a.sock is already used by devices[0].socket',
      'devices[3].options.disk: disk /srv/d.img is already used by devices[2].options.disk',
    ]);
  });

  it('refuses to use a path that exists and is not a socket', () => {
    const file = dir.file('not-a-socket');
    writeFileSync(file, 'hello');
    const { errors } = validateConfig([{ type: 'gpio', socket: file }], 'f.json', '/');
    expect(errors[0]?.message).toMatch(/devices\[0\]\.socket: .*not-a-socket exists and is not a socket/);
  });

  it('parses sizes', () => {
    expect(parseSize('1G')).toEqual({ bytes: 2 ** 30 });
    expect(parseSize('512MiB')).toEqual({ bytes: 512 * 2 ** 20 });
    expect(parseSize('4096')).toEqual({ bytes: 4096 });
    expect(parseSize(8192)).toEqual({ bytes: 8192 });
    expect(parseSize('0')).toHaveProperty('error');
    expect(parseSize('1 furlong')).toHaveProperty('error');
    expect(parseSize(-1)).toHaveProperty('error');
  });
});

describe('serve arguments', () => {
  it('groups quick flags by --device', () => {
    const { config, logLevel } = parseServeArgs(
      [
        '--device',
        'nvme',
        '--socket',
        'n.sock',
        '--disk',
        'n.img',
        '--size',
        '1G',
        '-d',
        'gpio',
        '-s',
        'g.sock',
        '--control',
        'none',
        '--trace',
      ],
      '/w',
    );
    expect(logLevel).toBe('debug');
    expect(config.source).toBe('command line');
    expect(config.devices).toMatchObject([
      {
        type: 'nvme',
        name: 'nvme0',
        socket: '/w/n.sock',
        namespaces: [{ path: '/w/n.img', size: 2 ** 30, lbaSize: 512 }],
      },
      { type: 'gpio', name: 'gpio0', socket: '/w/g.sock', control: null },
    ]);
  });

  it('names the flag in quick-flag errors', () => {
    const messages = errorsOf(() =>
      parseServeArgs(
        ['--socket', 'x.sock', '--device', 'nvme', '--size', 'big', '--device', 'gpio', '--log-level', 'loud'],
        '/w',
      ),
    );
    expect(messages).toEqual(
      expect.arrayContaining([
        'command line: --socket: belongs to a device: put it after --device TYPE',
        'command line: --log-level: must be one of fatal, error, warn, info, debug, trace, silent, got "loud"',
        expect.stringMatching(/^command line: --device #1 \(nvme\) --size: must be a size/),
        'command line: --device #1 (nvme) --socket: is required (the UNIX socket path QEMU connects to)',
        'command line: --device #2 (gpio) --socket: is required (the UNIX socket path QEMU connects to)',
      ]),
    );
    expect(errorsOf(() => parseServeArgs(['--frobnicate'], '/w'))[0]).toMatch(
      /^command line: arguments: Unknown option '--frobnicate'/,
    );
    expect(errorsOf(() => parseServeArgs(['--config', 'a.json', '--device', 'gpio'], '/w'))).toContain(
      'command line: --device: cannot be combined with --config (put the devices in the file)',
    );
  });

  it('uses the built-in default with no device arguments', () => {
    const { config } = parseServeArgs([], '/srv/w');
    expect(config.source).toBe('built-in default');
    expect(config.devices).toMatchObject([
      {
        type: 'nvme',
        name: 'nvme0',
        socket: '/srv/w/run/nvme0.sock',
        namespaces: [{ path: '/srv/w/data/nvme0.img', size: 2 ** 30 }],
      },
      { type: 'gpio', name: 'gpio0', socket: '/srv/w/run/gpio0.sock', control: '/srv/w/run/gpio0.sock.control' },
    ]);
  });

  it('reads a config file and reports JSON errors with the file name', () => {
    const file = dir.file('bad.json');
    writeFileSync(file, '{ "devices": [ }');
    expect(errorsOf(() => parseServeArgs(['--config', file]))[0]).toMatch(
      new RegExp(`^${file}: \\(file\\): is not valid JSON`),
    );
    expect(errorsOf(() => parseServeArgs(['--config', dir.file('none.json')]))[0]).toMatch(
      /none\.json: \(file\): cannot read it: no such file/,
    );
  });

  it('prints a QEMU option that quotes the socket path for a shell', () => {
    expect(qemuDeviceOption('/run/vfio-user/nvme0.sock')).toBe(
      `-device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/run/vfio-user/nvme0.sock"}}'`,
    );
    expect(qemuDeviceOption("/tmp/it's.sock")).toContain(`it'\\''s.sock`);
  });
});

describe('the CLI with a bad configuration', { timeout: 60_000 }, () => {
  it('exits 2 naming file and field, before creating any socket', async () => {
    const file = dir.file('devices.json');
    const broken = join(ROOT, 'test', 'cli', 'fixtures', 'broken-device.ts');
    mkdirSync(join(dir.path, 'run'));
    writeFileSync(
      file,
      JSON.stringify({
        devices: [
          { type: 'gpio', socket: 'run/ok.sock' },
          { type: 'nvme', socket: 'run/n.sock', options: { disk: 'n.img', size: '1G', lbaSize: 520 } },
          { type: broken, socket: 'run/m.sock' },
        ],
      }),
    );
    const result = await runToExit(['serve', '--config', file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`${file}: devices[1].options.lbaSize: must be 512 or 4096, got number 520`);
    expect(result.stderr).toContain('nothing was started');
    expect(existsSync(join(dir.path, 'run', 'ok.sock'))).toBe(false);
    expect(existsSync(join(dir.path, 'n.img'))).toBe(false);

    // Structurally valid now: the module is loaded and found wanting, still before anything starts.
    const demo = join(ROOT, 'test', 'cli', 'fixtures', 'demo-device.ts');
    writeFileSync(
      file,
      JSON.stringify([
        { type: 'gpio', socket: 'run/ok.sock' },
        { type: broken, socket: 'run/m.sock' },
        { type: demo, socket: 'run/d.sock', options: { magic: 'x', colour: 1 } },
      ]),
    );
    const second = await runToExit(['serve', '--config', file]);
    expect(second.code).toBe(2);
    expect(second.stderr).toContain(`${file}: devices[1].type: device module ${broken} exports no factory`);
    expect(second.stderr).toContain(`${file}: devices[2].options.colour: unknown option (expected magic)`);
    expect(second.stderr).toContain(`${file}: devices[2].options.magic: must be a whole number`);
    expect(existsSync(join(dir.path, 'run', 'ok.sock'))).toBe(false);
  });

  it('--check builds every device without starting it, and says what would be served', async () => {
    const image = dir.file('disk.img');
    const result = await runToExit([
      'serve',
      '--check',
      '--device',
      'gpio',
      '--socket',
      dir.file('g.sock'),
      '--device',
      'nvme',
      '--socket',
      dir.file('n.sock'),
      '--disk',
      image,
      '--size',
      '1G',
      '--metrics',
      '127.0.0.1:9464',
    ]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('command line: configuration OK (every device was built, then closed)');
    expect(result.stdout).toContain('vfio-user-ts would serve (nothing runs: --check):');
    expect(result.stdout).not.toContain('is serving');
    expect(result.stdout).toContain('metrics: http://127.0.0.1:9464/metrics');
    expect(result.stdout).toContain(
      `-device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"${dir.file('g.sock')}"}}'`,
    );
    expect(result.stdout).toContain('memory-backend-memfd,id=mem,size=512M,share=on');
    // Nothing listened, no control socket, no 1 GiB image.
    expect(existsSync(dir.file('g.sock'))).toBe(false);
    expect(existsSync(dir.file('g.sock.control'))).toBe(false);
    expect(existsSync(image)).toBe(false);
  });

  it('--check runs module factories: one that throws fails the check, named by its flag', async () => {
    const throwing = dir.file('throwing.ts');
    writeFileSync(throwing, `export default function createDevice() { throw new Error('no such card'); }\n`);
    const result = await runToExit(['serve', '--check', '-d', throwing, '-s', dir.file('t.sock')]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`command line: --device #1 (${throwing}): cannot create it: no such card`);
    expect(result.stdout).not.toContain('serving');
  });

  it('a factory that throws at start is reported once: one stderr line, one log record with the cause', async () => {
    const throwing = dir.file('throwing.ts');
    writeFileSync(throwing, `export default function createDevice() { throw new Error('no such card'); }\n`);
    const result = await runToExit(['serve', '--log-format', 'json', '-d', throwing, '-s', dir.file('t.sock')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('vfio-user-ts: device throwing0: cannot create it: no such card\n');
    const failed = result.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; stage?: string; err?: { message: string } })
      .filter((r) => r.msg === 'device throwing0: start failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ stage: 'create', err: { message: 'no such card' } });
    // The error's text appears once in that line, not wrapped and repeated.
    expect(JSON.stringify(failed[0]).match(/no such card/g)).toHaveLength(2); // err.message and err.stack's first line
    expect(JSON.stringify(failed[0])).not.toContain('cannot create it: no such card');
  });
});

describe('module options on the command line', () => {
  const demo = join(ROOT, 'test', 'cli', 'fixtures', 'demo-device.ts');

  it('--option KEY=VALUE sets options (JSON or text) for any device type', () => {
    const { config } = parseServeArgs(
      [
        '-d',
        demo,
        '-s',
        'a.sock',
        '-o',
        'magic=7',
        '--option',
        'label=plain text',
        '-d',
        'nvme',
        '-s',
        'n.sock',
      ].concat(['--size', '1M', '--option', 'serial="S1"', '--option', 'model=Model X']),
      '/w',
    );
    expect(config.devices[0]).toMatchObject({ type: 'module', options: { magic: 7, label: 'plain text' } });
    expect(config.devices[1]).toMatchObject({ type: 'nvme', serial: 'S1', model: 'Model X' });
  });

  it('errors about them name the flag, not devices[0].options', async () => {
    expect(
      errorsOf(() => parseServeArgs(['-d', 'nvme', '-s', 'n.sock', '--size', '1M', '-o', 'queues=99'], '/w')),
    ).toEqual(['command line: --device #1 (nvme) --option queues: must be a whole number from 1 to 64, got number 99']);
    expect(errorsOf(() => parseServeArgs(['-d', 'gpio', '-s', 'g.sock', '-o', 'nokey'], '/w'))).toEqual([
      'command line: --device #1 (gpio) --option: must be KEY=VALUE (KEY a name, VALUE JSON or text), got "nokey"',
    ]);
    expect(errorsOf(() => parseServeArgs(['-o', 'a=1'], '/w'))).toEqual([
      'command line: --option: belongs to a device: put it after --device TYPE',
    ]);
    // The module's own validateOptions, through the daemon.
    const result = await runToExit([
      'serve',
      '--check',
      '-d',
      demo,
      '-s',
      dir.file('d.sock'),
      '-o',
      'magic=x',
      '-o',
      'colour=1',
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`command line: --device #1 (${demo}) --option magic: must be a whole number`);
    expect(result.stderr).toContain(
      `command line: --device #1 (${demo}) --option colour: unknown option (expected magic)`,
    );
    expect(result.stderr).not.toContain('devices[0]');
  });

  it('--metrics and the config file\'s "metrics" take HOST:PORT', () => {
    expect(parseServeArgs(['-d', 'gpio', '-s', 'g.sock', '--metrics', '[::1]:9464'], '/w').config.metrics).toEqual({
      host: '::1',
      port: 9464,
    });
    expect(errorsOf(() => parseServeArgs(['-d', 'gpio', '-s', 'g.sock', '--metrics', '9464'], '/w'))[0]).toMatch(
      /^command line: --metrics: must be "HOST:PORT"/,
    );
    const file = dir.file('m.json');
    writeFileSync(file, JSON.stringify({ metrics: 'localhost:70000', devices: [{ type: 'gpio', socket: 'g.sock' }] }));
    expect(errorsOf(() => parseServeArgs(['--config', file]))).toEqual([
      `${file}: metrics: must be "HOST:PORT" (e.g. 127.0.0.1:9464, [::1]:9464), got "localhost:70000"`,
    ]);
  });
});
