/**
 * Running a device server in the test process and connecting clients to it,
 * plus small assertions for the protocol tests.
 */
import { expect } from 'vitest';
import { serve, type DeviceServer, type ServeOptions } from '../../server/server.js';
import type { Endpoint } from '../../server/endpoint.js';
import { createLogger, type Logger } from '../../server/log.js';
import { HEADER_SIZE, HeaderFlag } from '../../protocol/constants.js';
import { VfioUserClient, type ClientOptions, type RawMessage } from '../../client/index.js';
import { TestDevice } from './test-device.js';
import { PciTestDevice } from './pci-test-device.js';
import type { DeviceUnderTest } from './device-under-test.js';

/**
 * The device models the conformance tests run against: the real one
 * (PciDevice, server/pci) and the minimal TestDevice (an independent Endpoint,
 * so a connection bug cannot hide behind a matching PciDevice bug).
 */
export const DEVICE_KINDS: Array<[string, () => DeviceUnderTest]> = [
  ['PciDevice', () => new PciTestDevice()],
  ['TestDevice', () => new TestDevice()],
];
import { tempSocketPath } from './temp.js';

/** A logger for tests: silent unless TEST_LOG_LEVEL is set (e.g. debug). */
export function testLogger(): Logger {
  return createLogger({ level: (process.env.TEST_LOG_LEVEL as 'debug' | undefined) ?? 'silent', pretty: false });
}

export interface RunningDevice<E extends Endpoint = DeviceUnderTest> {
  readonly device: E;
  readonly socketPath: string;
  readonly server: DeviceServer;
  /**
   * Connect a client (negotiated unless options say otherwise); closed by stop().
   * Waits first until the server has let go of the previous client (a client
   * that connects meanwhile is queued, or turned away when too many wait), so
   * tests see one client at a time; `busy` skips the wait. A negotiated
   * client then sets memory decoding and bus mastering in the Command
   * register, as a guest driver would.
   */
  connect(options?: ClientOptions & { busy?: boolean }): Promise<VfioUserClient>;
  /** Resolve once no client is attached (the previous one is closing or gone). A plain function: pass it on as is. */
  readonly idle: () => Promise<void>;
  /** Close every client this harness opened, stop the server, remove the socket dir. */
  stop(): Promise<void>;
}

/**
 * Serve `device` (default: a fresh PciTestDevice) on a temp socket. stop()
 * closes the device if it has a close() method.
 */
export async function startDevice<E extends Endpoint = DeviceUnderTest>(
  device?: E,
  options: Omit<ServeOptions, 'socketPath' | 'log'> = {},
): Promise<RunningDevice<E>> {
  const dev = (device ?? new PciTestDevice()) as E;
  const sock = tempSocketPath();
  const log = testLogger();
  const server = await serve(dev, { ...options, socketPath: sock.path, log });
  const clients: VfioUserClient[] = [];
  const idle = async () => {
    for (let i = 0; i < 500; i++) {
      const conn = server.connection;
      if (!conn || conn.state === 'closing' || conn.state === 'closed') return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error('the server still holds the previous client after 5 s');
  };
  return {
    device: dev,
    socketPath: sock.path,
    server,
    idle,
    async connect(options = {}) {
      const { busy, ...rest } = options;
      if (!busy) await idle();
      const c = await VfioUserClient.connect(sock.path, { log, timeoutMs: 5000, ...rest });
      clients.push(c);
      // As a guest driver does (pci_enable_device + pci_set_master): memory decoding and bus
      // mastering on, or a PciDevice refuses the device's DMA and drops its MSI/MSI-X.
      if (!rest.skipNegotiation) await c.cfgWrite16(0x04, 0x0006);
      return c;
    },
    async stop() {
      for (const c of clients) c.close();
      await server.close();
      (dev as { close?: () => void }).close?.();
      sock.remove();
    },
  };
}

/** Assert `p` rejects with an error whose errno is `errno`. */
export async function expectErrno(p: Promise<unknown>, errno: number): Promise<void> {
  await expect(p).rejects.toMatchObject({ errno });
}

/** Assert a raw reply is an error reply (16 bytes, REPLY|ERROR) with `errno`. */
export function expectErrorReply(reply: RawMessage | undefined, errno: number): void {
  expect(reply, 'expected a reply').toBeDefined();
  const h = reply!.header;
  expect({
    type: h.flags & HeaderFlag.TYPE_MASK,
    error: (h.flags & HeaderFlag.ERROR) !== 0,
    errno: h.error,
    size: reply!.message.byteLength,
  }).toEqual({
    type: HeaderFlag.TYPE_REPLY,
    error: true,
    errno,
    size: HEADER_SIZE,
  });
  expect(reply!.fds).toEqual([]);
}

export interface RawHeader {
  id?: number;
  command: number;
  /** Header size field (default: 16 + payload length). */
  size?: number;
  flags?: number;
  error?: number;
}

/** Build a message with any header (even a lying one) followed by `payload`. */
export function rawMessage(h: RawHeader, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const bytes = new Uint8Array(HEADER_SIZE + payload.byteLength);
  const dv = new DataView(bytes.buffer);
  dv.setUint16(0, h.id ?? 0, true);
  dv.setUint16(2, h.command, true);
  dv.setUint32(4, h.size ?? bytes.byteLength, true);
  dv.setUint32(8, h.flags ?? 0, true);
  dv.setUint32(12, h.error ?? 0, true);
  bytes.set(payload, HEADER_SIZE);
  return bytes;
}

const FIELD_SIZE = { u8: 1, u16: 2, u32: 4, u64: 8 } as const;

/** Little-endian payload builder: u32/u64 fields in order. */
export function fields(
  ...parts: Array<['u8', number] | ['u16', number] | ['u32', number] | ['u64', bigint | number]>
): Uint8Array {
  const size = parts.reduce((n, [t]) => n + FIELD_SIZE[t], 0);
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  let at = 0;
  for (const [t, v] of parts) {
    if (t === 'u8') dv.setUint8(at, v);
    else if (t === 'u16') dv.setUint16(at, v, true);
    else if (t === 'u32') dv.setUint32(at, v >>> 0, true);
    else dv.setBigUint64(at, BigInt(v), true);
    at += FIELD_SIZE[t];
  }
  return out;
}

/** Send a raw command and return its reply (error replies resolve; see expectErrorReply). */
export async function rawRequest(
  client: VfioUserClient,
  h: RawHeader,
  payload?: Uint8Array,
  fds: readonly number[] = [],
): Promise<RawMessage> {
  const id = h.id ?? client.freshId();
  return (await client.sendRaw(rawMessage({ ...h, id }, payload), fds, { expectId: id }))!;
}

/** The connection still works: a GET_INFO round trip succeeds. */
export async function expectAlive(client: VfioUserClient): Promise<void> {
  const info = await client.getDeviceInfo();
  expect(info.numRegions).toBeGreaterThanOrEqual(9);
}

/** The server dropped the connection (the client saw EOF or a reset). */
export async function expectClosed(client: VfioUserClient): Promise<void> {
  const reason = await Promise.race([
    client.closed,
    new Promise<string>((r) => setTimeout(() => r('still open after 5 s'), 5000)),
  ]);
  expect(reason).not.toBe('still open after 5 s');
}
