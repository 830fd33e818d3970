/**
 * Mistakes a device author makes, and what they see: an MSI-X table placed by
 * default in a BAR with register handlers is refused (it would hide those
 * registers); a register handler that throws is logged (rate-limited: the
 * guest repeats the access at will) and answered with EIO, a VfioUserError
 * keeps its errno; a device built without a logger logs at LOG_LEVEL to stderr.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { PciDevice } from '../../../server/pci/index.js';
import { VfioUserError } from '../../../protocol/errors.js';
import { Errno } from '../../../protocol/constants.js';
import { ROOT } from '../../cli/daemon-process.js';

const id = { vendor: 0x1b36, device: 0x0010, classCode: 0xff0000 };
const devices: PciDevice[] = [];
afterEach(() => {
  for (const d of devices.splice(0)) d.close();
});

/** A pino logger whose JSON lines land in `lines`. */
function capture(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

describe('MSI-X placement', () => {
  const registers = { index: 0, size: 0x1000, read: () => 0, write: () => {} };

  it('refuses a default MSI-X table in a BAR that has register handlers, naming the bytes and the fix', () => {
    expect(
      () => new PciDevice({ name: 'x', id, bars: [registers], interrupts: { msix: { vectors: 4, bar: 0 } } }),
    ).toThrow(
      /MSI-X table in BAR 0 \(bytes 0x800-0x83f\) would hide those bytes from BAR 0's register handlers: put MSI-X in a BAR of its own/,
    );
    // The PBA alone in a register BAR is refused the same way.
    expect(
      () =>
        new PciDevice({
          name: 'x',
          id,
          bars: [registers, { index: 2, size: 0x1000 }],
          interrupts: { msix: { vectors: 4, bar: 2, pbaBar: 0 } },
        }),
    ).toThrow(/MSI-X PBA in BAR 0/);
  });

  it('accepts MSI-X in a BAR of its own, in a BAR without handlers, or placed explicitly', () => {
    devices.push(new PciDevice({ name: 'a', id, bars: [registers], interrupts: { msix: { vectors: 4, bar: 4 } } }));
    devices.push(
      new PciDevice({
        name: 'b',
        id,
        bars: [{ index: 0, size: 0x1000 }],
        interrupts: { msix: { vectors: 4, bar: 0 } },
      }),
    );
    const c = new PciDevice({
      name: 'c',
      id,
      bars: [registers],
      interrupts: { msix: { vectors: 4, bar: 0, tableOffset: 0xc00, pbaOffset: 0xe00 } },
    });
    devices.push(c);
    expect(c.msixLayout).toMatchObject({ tableBar: 0, tableOffset: 0xc00, pbaOffset: 0xe00 });
  });
});

describe('a register handler that throws', () => {
  it('is logged with BAR, offset and error, rate-limited, and answered with EIO', async () => {
    const { log, lines } = capture();
    let calls = 0;
    const dev = new PciDevice({
      name: 'buggy',
      id,
      log,
      bars: [
        {
          index: 0,
          size: 0x100,
          read: () => {
            calls++;
            throw new TypeError('cannot read properties of undefined');
          },
          write: (offset) => {
            if (offset === 4) throw new VfioUserError(Errno.EPERM, 'read-only register');
            return Promise.reject(new Error('async boom'));
          },
        },
      ],
    });
    devices.push(dev);
    for (let i = 0; i < 20; i++) {
      let thrown: unknown;
      try {
        await dev.regionRead(0, 8n, 4);
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toMatchObject({ errno: Errno.EIO });
      expect((thrown as Error).message).toMatch(/BAR 0 read handler threw at 0x8/);
    }
    expect(calls).toBe(20);
    await expect(dev.regionWrite(0, 0n, new Uint8Array(4))).rejects.toMatchObject({ errno: Errno.EIO });
    // A VfioUserError is the author's answer: its errno goes back, nothing is logged for it.
    await expect(Promise.resolve().then(() => dev.regionWrite(0, 4n, new Uint8Array(4)))).rejects.toMatchObject({
      errno: Errno.EPERM,
    });
    const threw = lines.filter((l) => l.kind === 'register-handler-threw');
    // 5 per minute per kind (LogLimiter's default burst), however often the guest tries.
    expect(threw).toHaveLength(5);
    expect(threw[0]).toMatchObject({ device: 'buggy', bar: 0, offset: '0x8', handler: 'read', level: 50 });
    expect((threw[0]!.err as { message: string }).message).toBe('cannot read properties of undefined');
  });
});

describe('a device built without a logger', () => {
  const script = (level: string | undefined): string => {
    const run = spawnSync(
      process.execPath,
      [
        '--import',
        join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs'),
        '-e',
        `import('${join(ROOT, 'server', 'pci', 'index.ts')}').then(({ PciDevice }) => {
           const dev = new PciDevice({ name: 'nolog', id: { vendor: 1, device: 2, classCode: 0 },
             bars: [{ index: 0, size: 16, read: () => { throw new Error('bug'); } }] });
           dev.log.info('lifecycle line');
           try { dev.regionRead(0, 0n, 4); } catch {}
           dev.close();
         })`,
      ],
      { env: { ...process.env, LOG_LEVEL: level ?? '' }, encoding: 'utf8', cwd: ROOT },
    );
    expect(run.status).toBe(0);
    expect(run.stdout).toBe(''); // stdout stays the program's own
    return run.stderr;
  };

  it('logs problems to stderr by default, and what LOG_LEVEL asks for', () => {
    const quiet = script(undefined);
    expect(quiet).toContain('BAR 0 read handler threw');
    expect(quiet).not.toContain('lifecycle line');
    const chatty = script('info');
    expect(chatty).toContain('lifecycle line');
    expect(script('silent')).toBe('');
  });
});
