/**
 * VERSION (1): the codec (NUL-terminated JSON, capabilities parsed with
 * libvfio-user's rules and formatted within a size budget); what QEMU sends
 * works, the reply fits in the request, and every malformed VERSION gets
 * libvfio-user's EINVAL followed by a hang-up.
 */
import { describe, expect, it } from 'vitest';
import { native } from '../../native/index.js';
import * as P from '../../protocol/index.js';
import { VfioUserCommand, Errno, HEADER_SIZE } from '../../protocol/constants.js';
import { encodeVersionRequest, decodeVersion } from '../../protocol/version.js';
import { VfioUserClient } from '../../client/index.js';
import { connectedEachTest, deviceEachTest } from '../helpers/per-test.js';
import {
  DEVICE_KINDS,
  expectErrorReply,
  expectClosed,
  expectAlive,
  rawRequest,
  rawMessage,
  startDevice,
  type RunningDevice,
} from '../helpers/harness.js';
import { CONFIG_SIZE } from '../helpers/test-device.js';
import { PciTestDevice } from '../helpers/pci-test-device.js';

let run: RunningDevice;

describe('VERSION codec', () => {
  it('round-trips and validates the NUL', () => {
    const m = P.encodeVersionRequest(1, { major: 0, minor: 0, json: '{"capabilities":{"max_msg_fds":8}}' });
    const d = P.decodeVersion(m);
    expect(d).toMatchObject({ major: 0, minor: 0, capabilities: { maxMsgFds: 8 } });
    expect(m[m.length - 1]).toBe(0);
    expect(P.encodeVersionRequest(1, { major: 0, minor: 0, json: '{}' }).byteLength).toBe(23);
    const noNul = m.slice(0, m.length - 1);
    expect(() => P.decodeVersion(noNul)).toThrow(P.ProtocolError);
    expect(() =>
      P.decodeVersion(P.encodeHeader({ id: 1, command: 1, size: 18, flags: 0, error: 0 }).slice(0, 18)),
    ).toThrow(P.ProtocolError);
    expect(P.decodeVersion(P.encodeVersionReply(1, { major: 0, minor: 0, json: '' })).json).toBe('');
  });
});

describe('capabilities', () => {
  it('parses QEMU’s request and applies defaults', () => {
    const c = P.parseCapabilities(
      '{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true,"migration":{"pgsize":4096,"max_bitmap_size":268435456}}}',
    );
    expect(c).toMatchObject({
      maxMsgFds: 16,
      maxDataXferSize: 1 << 20,
      pgsizes: 4096,
      maxDmaMaps: 65535,
      writeMultiple: true,
      migration: { pgsize: 4096, maxBitmapSize: 268435456 },
    });
    expect(P.parseCapabilities('')).toMatchObject({ maxMsgFds: 1, maxDataXferSize: 1 << 20, writeMultiple: false });
    expect(P.parseCapabilities('{"other":1}').maxMsgFds).toBe(1);
  });
  it.each([
    'nope',
    '[]',
    '{"capabilities":3}',
    '{"capabilities":{"max_msg_fds":-1}}',
    '{"capabilities":{"max_msg_fds":1025}}',
    '{"capabilities":{"max_msg_fds":1.5}}',
    '{"capabilities":{"max_data_xfer_size":"1"}}',
    '{"capabilities":{"pgsizes":100}}',
    '{"capabilities":{"write_multiple":1}}',
    '{"capabilities":{"migration":[]}}',
    '{"capabilities":{"migration":{"pgsize":10}}}',
    '{"capabilities":{"twin_socket":{"supported":"yes"}}}',
  ])('rejects %s with EINVAL', (json) => {
    expect(() => P.parseCapabilities(json)).toThrow(expect.objectContaining({ errno: P.Errno.EINVAL }));
  });
  it('formats within a budget by dropping optional keys', () => {
    const caps = { maxMsgFds: 16, maxDataXferSize: 1 << 20, pgsizes: 4096, maxDmaMaps: 65535, writeMultiple: true };
    const full = P.formatCapabilities(caps);
    expect(JSON.parse(full)).toEqual({
      capabilities: {
        max_msg_fds: 16,
        max_data_xfer_size: 1048576,
        pgsizes: 4096,
        max_dma_maps: 65535,
        write_multiple: true,
      },
    });
    const small = P.formatCapabilities(caps, 70);
    expect(small.length).toBeLessThanOrEqual(70);
    expect((JSON.parse(small) as { capabilities: Record<string, unknown> }).capabilities.max_msg_fds).toBe(16);
    expect(P.formatCapabilities(caps, 5)).toBe('{}');
  });
});

const raw = () => run.connect({ skipNegotiation: true });
const enc = new TextEncoder();

function versionPayload(major: number, minor: number, json?: string | Uint8Array): Uint8Array {
  const body = typeof json === 'string' ? enc.encode(json + '\0') : (json ?? new Uint8Array(0));
  const p = new Uint8Array(4 + body.byteLength);
  const dv = new DataView(p.buffer);
  dv.setUint16(0, major, true);
  dv.setUint16(2, minor, true);
  p.set(body, 4);
  return p;
}

describe.each(DEVICE_KINDS)('VERSION, happy path (%s)', (_kind, make) => {
  let client: VfioUserClient;
  connectedEachTest((connected) => {
    client = connected;
  }, make);

  it('VERSION: negotiated capabilities', () => {
    const caps = client.server!.capabilities;
    expect(client.server!.major).toBe(0);
    expect(client.server!.minor).toBe(0);
    expect(caps.maxDataXferSize).toBeGreaterThanOrEqual(CONFIG_SIZE);
    expect(caps.maxMsgFds).toBeGreaterThanOrEqual(1);
    expect(caps.maxMsgFds).toBeLessThanOrEqual(16);
    expect(caps.pgsizes % 4096).toBe(0);
  });
});

describe('VERSION', () => {
  deviceEachTest((started) => {
    run = started;
  });

  it("QEMU's request: reply major 0, minor 0, NUL-terminated JSON object, no larger than the request, no fds", async () => {
    const c = await raw();
    const json = c.versionJson;
    const request = encodeVersionRequest(c.freshId(), { major: 0, minor: 0, json });
    const reply = (await c.sendRaw(request))!;
    expect(reply.fds).toEqual([]);
    expect(reply.message.byteLength).toBeLessThanOrEqual(request.byteLength);
    expect(reply.message[reply.message.byteLength - 1]).toBe(0);
    const v = decodeVersion(reply.message);
    expect([v.major, v.minor]).toEqual([0, 0]);
    expect(JSON.parse(v.json)).toBeTypeOf('object');
    await expectAlive(c);
  });

  it('a small request gets a reply that still fits (the server trims its JSON)', async () => {
    const c = await raw();
    const request = encodeVersionRequest(c.freshId(), { major: 0, minor: 0, json: '{}' });
    const reply = (await c.sendRaw(request))!;
    expect(reply.header.flags & 0x20).toBe(0);
    expect(reply.message.byteLength).toBeLessThanOrEqual(request.byteLength);
  });

  it('no JSON at all: spec defaults, accepted', async () => {
    const c = await raw();
    const reply = await rawRequest(c, { command: VfioUserCommand.VERSION }, versionPayload(0, 0));
    expect(reply.header.flags & 0x20).toBe(0);
    await expectAlive(c);
  });

  it('a client with max_msg_fds 1 and a small max_data_xfer_size negotiates', async () => {
    const c = await run.connect({ capabilities: { maxMsgFds: 1, maxDataXferSize: 4096 } });
    await expectAlive(c);
  });

  const bad: Array<[string, Uint8Array]> = [
    ['payload shorter than 4 bytes', new Uint8Array([0, 0])],
    ['major 1', versionPayload(1, 0, '{}')],
    ['major 999', versionPayload(999, 0)],
    ['JSON without its NUL', versionPayload(0, 0, enc.encode('{"capabilities":{}}'))],
    ['unparsable JSON', versionPayload(0, 0, '{"capabilities":')],
    ['JSON not an object', versionPayload(0, 0, '[1,2]')],
    ['capabilities not an object', versionPayload(0, 0, '{"capabilities":7}')],
    ['max_msg_fds negative', versionPayload(0, 0, '{"capabilities":{"max_msg_fds":-1}}')],
    ['max_msg_fds too large', versionPayload(0, 0, '{"capabilities":{"max_msg_fds":1025}}')],
    ['max_msg_fds a string', versionPayload(0, 0, '{"capabilities":{"max_msg_fds":"8"}}')],
    ['migration not an object', versionPayload(0, 0, '{"capabilities":{"migration":1}}')],
    ['migration pgsize not a page multiple', versionPayload(0, 0, '{"capabilities":{"migration":{"pgsize":4095}}}')],
    ['pgsizes 0', versionPayload(0, 0, '{"capabilities":{"pgsizes":0}}')],
    ['invalid UTF-8', versionPayload(0, 0, new Uint8Array([0x7b, 0xff, 0xfe, 0x7d, 0]))],
  ];
  for (const [what, payload] of bad) {
    it(`${what}: EINVAL, then the server hangs up`, async () => {
      const c = await raw();
      expectErrorReply(await rawRequest(c, { command: VfioUserCommand.VERSION }, payload), Errno.EINVAL);
      await expectClosed(c);
    });
  }

  it('fds attached to VERSION: EINVAL, fds closed, hang-up', async () => {
    const c = await raw();
    const efd = native.eventfd(0);
    const request = encodeVersionRequest(c.freshId(), { major: 0, minor: 0, json: c.versionJson });
    const reply = (await c.sendRaw(request, [efd]))!;
    native.closeFd(efd);
    expectErrorReply(reply, Errno.EINVAL);
    await expectClosed(c);
  });

  it('a first message other than VERSION: EINVAL, hang-up', async () => {
    const c = await raw();
    const p = new Uint8Array(16);
    new DataView(p.buffer).setUint32(0, 16, true);
    expectErrorReply(await rawRequest(c, { command: VfioUserCommand.DEVICE_GET_INFO }, p), Errno.EINVAL);
    await expectClosed(c);
  });

  it('a second VERSION after negotiation is refused (EINVAL, as an unknown command), alive', async () => {
    const c = await run.connect();
    const reply = await rawRequest(c, { command: VfioUserCommand.VERSION }, versionPayload(0, 0, c.versionJson));
    expectErrorReply(reply, Errno.EINVAL);
    await expectAlive(c);
  });

  it('VfioUserClient.connect rejects a server that is not listening', async () => {
    await expect(VfioUserClient.connect(run.socketPath + '.none')).rejects.toThrow();
  });

  it('the header-only VERSION (16 bytes) is refused', async () => {
    const c = await raw();
    const reply = (await c.sendRaw(rawMessage({ id: 5, command: VfioUserCommand.VERSION, size: HEADER_SIZE })))!;
    expectErrorReply(reply, Errno.EINVAL);
    await expectClosed(c);
  });
});

describe('VERSION and migration', () => {
  let migratable: RunningDevice;
  deviceEachTest(
    (started) => {
      migratable = started;
    },
    () => new PciTestDevice('migratable', { migratable: true }),
  );

  it('a device that can migrate advertises "migration":{"pgsize":4096}; one that cannot advertises none', async () => {
    const c = await migratable.connect();
    expect(JSON.parse(c.server!.json)).toMatchObject({ capabilities: { migration: { pgsize: 4096 } } });
    const plain = await startDevice(new PciTestDevice('plain'));
    try {
      const p = await plain.connect();
      expect((JSON.parse(p.server!.json) as { capabilities: object }).capabilities).not.toHaveProperty('migration');
      expect(p.server!.capabilities.migration).toBeUndefined();
    } finally {
      await plain.stop();
    }
  });

  it("QEMU's v1 migration capability is accepted by both; another pgsize closes a migratable device's connection (EINVAL)", async () => {
    const qemu = await migratable.connect(); // QEMU_CAPABILITIES: {"pgsize":4096,"max_bitmap_size":268435456}
    await expectAlive(qemu);
    qemu.close();
    await migratable.idle();
    const c = await migratable.connect({ skipNegotiation: true });
    const reply = await rawRequest(
      c,
      { command: VfioUserCommand.VERSION },
      versionPayload(0, 0, '{"capabilities":{"migration":{"pgsize":8192}}}'),
    );
    expectErrorReply(reply, Errno.EINVAL);
    await expectClosed(c);

    const plain = await startDevice(new PciTestDevice('plain'));
    try {
      const p = await plain.connect({ capabilities: { migration: { pgsize: 8192 } } });
      await expectAlive(p);
    } finally {
      await plain.stop();
    }
  });
});
