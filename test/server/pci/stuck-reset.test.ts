/**
 * A device whose reset never finishes must not hang its client (issue 13):
 * PciDevice bounds every reset by `resetTimeoutMs`. DEVICE_RESET then gets
 * an ETIMEDOUT error reply in time (QEMU waits 5 s for any reply), config
 * and BAR accesses that waited for the reset go on, an FLR does not freeze
 * config space, and a disconnect lets the next client in.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfioUserClient } from '../../../client/index.js';
import { Errno } from '../../../protocol/constants.js';
import { PciDevice } from '../../../server/pci/index.js';
import { serve, type DeviceServer } from '../../../server/server.js';
import { tempSocketPath } from '../../helpers/temp.js';

const RESET_MS = 300;
/** The bound plus scheduling slack. */
const WITHIN_MS = RESET_MS + 700;

let dev: PciDevice;
let server: DeviceServer;
let resets = 0;
const sock = tempSocketPath('stuck');
const clients: VfioUserClient[] = [];

beforeEach(async () => {
  resets = 0;
  dev = new PciDevice({
    name: 'stuck',
    id: { vendor: 0x1b36, device: 0x0012, classCode: 0xff0000 },
    bars: [{ index: 0, size: 0x1000, read: () => 0x5a, write: () => {} }],
    express: { flr: true },
    resetTimeoutMs: RESET_MS,
    onReset: () => {
      resets++;
      return new Promise<void>(() => {}); // never done
    },
  });
  server = await serve(dev, { socketPath: sock.path });
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await server.close();
  dev.close();
});

async function connect(): Promise<VfioUserClient> {
  const c = await VfioUserClient.connect(sock.path, { timeoutMs: 5000 });
  clients.push(c);
  return c;
}

describe('a device whose reset never finishes', () => {
  it('DEVICE_RESET is answered with ETIMEDOUT within the bound; accesses go on', async () => {
    const c = await connect();
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      await expect(c.reset()).rejects.toMatchObject({ errno: Errno.ETIMEDOUT });
      expect(Date.now() - t0).toBeLessThan(WITHIN_MS);
    }
    expect(resets).toBe(3);
    expect(await c.cfg16(0)).toBe(0x1b36);
    const b = await c.regionRead(0, 0, 4);
    expect(b[0]).toBe(0x5a);
  });

  it('an FLR does not freeze config space', async () => {
    const c = await connect();
    const express = dev.capabilities.express!;
    await c.cfgWrite16(express + 8, 1 << 15);
    const t0 = Date.now();
    expect(await c.cfg16(0)).toBe(0x1b36); // waits for the FLR, at most its bound
    expect(Date.now() - t0).toBeLessThan(WITHIN_MS);
  });

  it('a disconnect lets the next client in within the bound', async () => {
    const c = await connect();
    c.close();
    const t0 = Date.now();
    const next = await connect();
    expect(await next.cfg16(0)).toBe(0x1b36);
    expect(Date.now() - t0).toBeLessThan(WITHIN_MS);
  });
});
