import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { LogLimiter } from 'vfio-user-ts';

function capture(): { log: pino.Logger; lines: { kind?: string; suppressed?: number; msg: string }[] } {
  const lines: { kind?: string; suppressed?: number; msg: string }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as (typeof lines)[number]);
      done();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

const flushed = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('LogLimiter', () => {
  it('logs the first `burst` lines of a kind per window, then one summary of the rest', async () => {
    const { log, lines } = capture();
    let now = 1000;
    const limiter = new LogLimiter(log, { burst: 3, windowMs: 60_000, now: () => now });
    for (let i = 0; i < 10_000; i++) limiter.warn('bad-doorbell', { i }, 'bad doorbell');
    limiter.warn('other', {}, 'other kind has its own budget');
    await flushed();
    expect(lines.filter((l) => l.kind === 'bad-doorbell')).toHaveLength(3);
    expect(lines.filter((l) => l.kind === 'other')).toHaveLength(1);
    expect(limiter.suppressed('bad-doorbell')).toBe(9_997);
    now += 60_000;
    limiter.warn('bad-doorbell', {}, 'bad doorbell');
    await flushed();
    const summary = lines.find((l) => l.suppressed !== undefined);
    expect(summary).toMatchObject({ kind: 'bad-doorbell', suppressed: 9_997 });
    expect(lines.filter((l) => l.kind === 'bad-doorbell')).toHaveLength(5); // 3 + summary + 1 of the new window
  });

  it('logs at most `maxLines` lines of all kinds together per window (summaries aside)', async () => {
    const { log, lines } = capture();
    let now = 0;
    const limiter = new LogLimiter(log, { burst: 5, maxLines: 10, now: () => now });
    for (let i = 0; i < 1000; i++) limiter.warn(`kind-${i % 20}`, {}, 'line');
    await flushed();
    expect(lines).toHaveLength(10);
    now += 60_000;
    for (let k = 0; k < 20; k++) limiter.warn(`kind-${k}`, {}, 'line');
    await flushed();
    // Each suppressed kind says so once, then the new window's budget applies again.
    expect(lines.filter((l) => l.suppressed !== undefined)).toHaveLength(20);
    expect(lines.filter((l) => l.suppressed === undefined)).toHaveLength(20);
  });

  it('flush() logs pending summaries; a disabled level costs nothing and counts nothing', async () => {
    const { log, lines } = capture();
    const limiter = new LogLimiter(log, { burst: 1 });
    limiter.warn('k', {}, 'a');
    limiter.warn('k', {}, 'b');
    limiter.flush();
    log.level = 'warn';
    for (let i = 0; i < 100; i++) limiter.debug('quiet', {}, 'not logged');
    await flushed();
    expect(lines.map((l) => l.msg)).toEqual(['a', 'k: 1 more suppressed']);
    expect(limiter.suppressed('quiet')).toBe(0);
  });
});
