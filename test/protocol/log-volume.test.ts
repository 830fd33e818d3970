/**
 * Logs are the attacker's disk: 20,000 hostile messages over hundreds of
 * connections to a real device (the GPIO card) at the default level (info)
 * cost a few KB of log, not one line per bad message: every line a client
 * can trigger goes through one LogLimiter per device (first few per kind,
 * at most 10 lines a minute in all, then "N more suppressed" summaries).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGpioDevice } from 'vfio-user-ts/gpio';
import { serve, type DeviceServer } from '../../server/server.js';
import { captureLog, logFlushed, type CapturedLog } from '../helpers/log-capture.js';
import { tempSocketPath } from '../helpers/temp.js';
import { runFuzz } from './fuzzer.js';

const MESSAGES = 20_000;

let captured: CapturedLog;
let server: DeviceServer;
let socket: ReturnType<typeof tempSocketPath>;

beforeAll(async () => {
  captured = captureLog('info');
  const { device } = createGpioDevice({ name: 'gpio0', log: captured.log });
  socket = tempSocketPath();
  server = await serve(device, { socketPath: socket.path, log: captured.log });
});

afterAll(async () => {
  await server.close();
  socket.remove();
});

const idle = async (): Promise<void> => {
  for (let i = 0; i < 500; i++) {
    const state = server.connection?.state;
    if (state === undefined || state === 'closing' || state === 'closed') return;
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('log volume under attack', () => {
  it(`${MESSAGES} hostile messages log under 16 KB at info`, { timeout: 60_000 }, async () => {
    const stats = await runFuzz({ socketPath: server.socketPath, idle, messages: MESSAGES, seed: 0x10c });
    expect(stats.connections).toBeGreaterThan(100);
    await server.close();
    await logFlushed();
    const { lines } = captured;
    // The limiter did its job: the bad messages happened, and were counted, not logged.
    const summaries = lines.filter((l) => l.suppressed !== undefined);
    expect(summaries.reduce((n, l) => n + l.suppressed!, 0)).toBeGreaterThan(1000);
    expect(captured.bytes()).toBeLessThan(16 * 1024);
    // No kind got more than the per-kind burst (5) before the closing summaries.
    const perKind = new Map<string, number>();
    for (const l of lines)
      if (l.kind !== undefined && l.suppressed === undefined) perKind.set(l.kind, (perKind.get(l.kind) ?? 0) + 1);
    for (const [kind, n] of perKind) expect(n, kind).toBeLessThanOrEqual(5);
  });
});
