/**
 * The connection observer: every request with our answer (VERSION included,
 * errors with errno and reason, fds in and out, reply bytes, duration), every
 * server-to-client DMA request, and the state changes; a throwing observer
 * does not break the connection.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { PciIrq, PciRegion, VfioUserCommand, Errno, HeaderFlag } from '../../../protocol/constants.js';
import type { ConnectionObserver, DmaRequestEvent, MessageEvent } from '../../../server/connection/index.js';
import { decodeHeader } from '../../../protocol/index.js';
import { PciTestDevice } from '../../helpers/pci-test-device.js';
import { Reg } from '../../helpers/test-device.js';
import { startDevice, type RunningDevice } from '../../helpers/harness.js';

let running: RunningDevice<PciTestDevice> | undefined;
afterEach(async () => {
  await running?.stop();
  running = undefined;
});

function recorder(): {
  observer: ConnectionObserver;
  messages: MessageEvent[];
  dma: DmaRequestEvent[];
  states: string[];
} {
  const messages: MessageEvent[] = [];
  const dma: DmaRequestEvent[] = [];
  const states: string[] = [];
  return {
    messages,
    dma,
    states,
    observer: {
      // The byte views are valid during the call only: keep copies.
      message: (e) => messages.push({ ...e, request: e.request.slice(), reply: e.reply?.slice() }),
      dmaRequest: (e) => dma.push({ ...e, request: e.request.slice(), reply: e.reply?.slice() }),
      state: (e) => states.push(e.state + (e.reason ? `: ${e.reason}` : '')),
    },
  };
}

describe('connection observer', () => {
  it('sees every request with its reply, errno, fds and duration, DMA requests and state changes', async () => {
    const rec = recorder();
    running = await startDevice(new PciTestDevice(), { observer: rec.observer });
    const client = await running.connect();
    await client.getDeviceInfo();
    await expect(client.regionRead(PciRegion.BAR0, 0x10000, 4)).rejects.toMatchObject({ code: 'EINVAL' });
    await client.enableIrqs(PciIrq.MSIX, 2);
    await client.regionWrite(PciRegion.BAR0, Reg.SCRATCH0, new Uint8Array(4), { posted: true });
    // The device reads message-only memory: a DMA_READ goes to the client.
    await client.dmaMap({ addr: 0x10000n, size: 0x1000n });
    const mem = client.createGuestMemory(0x1000);
    await client.dmaMap({ addr: 0x20000n, backing: mem });
    await client.barWrite32(PciRegion.BAR0, Reg.DMA_SRC_LO, 0x10000);
    await client.barWrite32(PciRegion.BAR0, Reg.DMA_DST_LO, 0x20000);
    await client.barWrite32(PciRegion.BAR0, Reg.DMA_LEN, 64);
    await client.barWrite32(PciRegion.BAR0, Reg.DOORBELL, 1);
    await client.waitForIrq(PciIrq.MSIX, 0);
    client.close();
    await running.idle();
    await running.server.connection?.closed;

    // The harness's connect() turns on memory decoding and bus mastering (a config write) first, as a driver does.
    const [version, enable, info, bad] = rec.messages;
    expect(version).toMatchObject({ command: VfioUserCommand.VERSION, errno: 0, fds: 0 });
    expect(enable).toMatchObject({ command: VfioUserCommand.REGION_WRITE, errno: 0 });
    expect(version!.replySize).toBeGreaterThan(20);
    expect(decodeHeader(version!.reply!).command).toBe(VfioUserCommand.VERSION);
    expect(info).toMatchObject({ command: VfioUserCommand.DEVICE_GET_INFO, errno: 0, size: 32, replySize: 32 });
    expect(info!.durationMs).toBeGreaterThanOrEqual(0);
    expect(info!.conn).toBe(version!.conn);
    expect(bad).toMatchObject({ command: VfioUserCommand.REGION_READ, errno: Errno.EINVAL, replySize: 16 });
    expect(bad!.reason).toMatch(/past its size/);
    const setIrqs = rec.messages.filter((m) => m.command === VfioUserCommand.DEVICE_SET_IRQS);
    expect(setIrqs.reduce((n, m) => n + m.fds, 0)).toBe(2);
    const posted = rec.messages.find(
      (m) => m.command === VfioUserCommand.REGION_WRITE && m.flags & HeaderFlag.NO_REPLY,
    );
    expect(posted).toMatchObject({ errno: 0, replySize: 0, reply: undefined });
    const regionInfo = rec.messages.filter((m) => m.command === VfioUserCommand.DEVICE_GET_REGION_INFO);
    expect(regionInfo.every((m) => m.replyFds <= 1)).toBe(true);

    expect(rec.dma).toHaveLength(1);
    expect(rec.dma[0]).toMatchObject({ command: VfioUserCommand.DMA_READ, addr: 0x10000n, count: 64, errno: 0 });
    expect(rec.dma[0]!.reply!.byteLength).toBeGreaterThanOrEqual(16 + 64);

    expect(rec.states).toEqual(['version', 'ready', 'closing: client disconnected', 'closed: client disconnected']);
  });

  it('keeps serving when an observer throws', async () => {
    running = await startDevice(new PciTestDevice(), {
      observer: {
        message: () => {
          throw new Error('observer bug');
        },
      },
    });
    const client = await running.connect();
    expect((await client.getDeviceInfo()).numRegions).toBe(9);
  });
});
