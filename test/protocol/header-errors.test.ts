/**
 * Malformed headers and framing (qemu-client-protocol.md section 4,
 * "Header" and "Dispatch"): libvfio-user's EINVAL, and the stream stays usable
 * wherever it can be re-framed.
 */
import { describe, expect, it } from 'vitest';
import { VfioUserCommand, Errno, HEADER_SIZE, HeaderFlag, Limits } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import {
  expectAlive,
  expectClosed,
  expectErrorReply,
  rawMessage,
  rawRequest,
  fields,
  type RunningDevice,
} from '../helpers/harness.js';
import type { VfioUserClient } from '../../client/index.js';

let run: RunningDevice;
let c: VfioUserClient;

connectedEachTest((client, started) => {
  c = client;
  run = started;
});

const getInfoPayload = () => fields(['u32', 16], ['u32', 0], ['u32', 0], ['u32', 0]);

describe('headers', () => {
  it('size < 16: EINVAL, then hang-up (the stream cannot be re-framed)', async () => {
    const reply = (await c.sendRaw(rawMessage({ id: 77, command: VfioUserCommand.DEVICE_GET_INFO, size: 8 })))!;
    expectErrorReply(reply, Errno.EINVAL);
    await expectClosed(c);
  });

  it('size larger than the maximum message: EINVAL, body skipped, stream in sync', async () => {
    const big = Limits.MAX_MESSAGE_SIZE + 1024;
    const payload = new Uint8Array(big - HEADER_SIZE);
    const reply = await rawRequest(c, { command: VfioUserCommand.REGION_WRITE }, payload);
    expectErrorReply(reply, Errno.EINVAL);
    await expectAlive(c);
  });

  it('a header alone for a command that needs a payload: EINVAL, alive', async () => {
    for (const cmd of [
      VfioUserCommand.DMA_MAP,
      VfioUserCommand.DMA_UNMAP,
      VfioUserCommand.DEVICE_GET_INFO,
      VfioUserCommand.DEVICE_GET_REGION_INFO,
      VfioUserCommand.DEVICE_GET_IRQ_INFO,
      VfioUserCommand.DEVICE_SET_IRQS,
      VfioUserCommand.REGION_READ,
      VfioUserCommand.REGION_WRITE,
      VfioUserCommand.DEVICE_FEATURE,
    ]) {
      expectErrorReply(await rawRequest(c, { command: cmd }), Errno.EINVAL);
    }
    await expectAlive(c);
  });

  it('unknown and unsupported commands: EINVAL, alive', async () => {
    for (const cmd of [
      0,
      VfioUserCommand.DIRTY_PAGES,
      VfioUserCommand.MIG_DATA_READ,
      VfioUserCommand.MIG_DATA_WRITE,
      19,
      100,
      0xffff,
    ]) {
      expectErrorReply(await rawRequest(c, { command: cmd }, new Uint8Array(16)), Errno.EINVAL);
    }
    await expectAlive(c);
  });

  it('DMA_READ / DMA_WRITE sent by a client: EINVAL (they are server requests), alive', async () => {
    expectErrorReply(
      await rawRequest(c, { command: VfioUserCommand.DMA_READ }, fields(['u64', 0], ['u64', 4])),
      Errno.EINVAL,
    );
    expectErrorReply(
      await rawRequest(c, { command: VfioUserCommand.DMA_WRITE }, fields(['u64', 0], ['u64', 4], ['u32', 0])),
      Errno.EINVAL,
    );
    await expectAlive(c);
  });

  it('an unsolicited reply is dropped without an answer, alive', async () => {
    await c.sendRaw(
      rawMessage(
        { id: 4242, command: VfioUserCommand.DEVICE_GET_INFO, flags: HeaderFlag.TYPE_REPLY },
        getInfoPayload(),
      ),
      [],
      { expectId: null },
    );
    await expectAlive(c);
    expect(c.strays).toEqual([]);
  });

  it('message types other than command/reply: refused (EINVAL) or dropped, never crash', async () => {
    for (const type of [2, 7, 0xf]) {
      const id = c.freshId();
      const p = c.sendRaw(
        rawMessage({ id, command: VfioUserCommand.DEVICE_GET_INFO, flags: type }, getInfoPayload()),
        [],
        { expectId: id, timeoutMs: 500 },
      );
      const reply = await p.catch((err: unknown) => err);
      if ('header' in (reply as object)) expectErrorReply(reply as never, Errno.EINVAL);
      else expect((reply as { errno: number }).errno).toBe(Errno.ETIMEDOUT);
    }
    await expectAlive(c);
  });

  it('the ERROR flag or an error value on a command is ignored for dispatch', async () => {
    const reply = await rawRequest(c, { command: VfioUserCommand.DEVICE_GET_INFO, error: 5 }, getInfoPayload());
    expect(reply.header.flags & HeaderFlag.ERROR).toBe(0);
    await expectAlive(c);
  });

  it('replies echo id and command for every id value, including 0 and 0xffff', async () => {
    for (const id of [0, 1, 0x7fff, 0xffff]) {
      const reply = await rawRequest(c, { id, command: VfioUserCommand.DEVICE_GET_INFO }, getInfoPayload());
      expect([reply.header.id, reply.header.command, reply.header.flags & HeaderFlag.TYPE_MASK]).toEqual([
        id,
        VfioUserCommand.DEVICE_GET_INFO,
        HeaderFlag.TYPE_REPLY,
      ]);
    }
  });

  it('requests are answered strictly in order', async () => {
    const ids = Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? c.cfg16(0) : c.regionRead(0, 0, 4)));
    await Promise.all(ids);
    const order: number[] = [];
    await Promise.all(Array.from({ length: 20 }, (_, i) => c.getIrqInfo(i % 5).then(() => order.push(i))));
    expect(order).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });

  it('a header whose size promises more than is sent, then hang-up: no reply, server survives for the next client', async () => {
    await c.sendRaw(rawMessage({ id: 9, command: VfioUserCommand.DEVICE_GET_INFO, size: 4096 }, getInfoPayload()), [], {
      expectId: null,
    });
    c.close();
    const next = await run.connect();
    await expectAlive(next);
  });
});
