/**
 * examples/minimal-device.ts tested the way docs/client.md shows a device
 * author testing a device (the file quotes the region below): served on a real
 * socket, driven by the client over the package's public entry points, and the
 * doorbell raises the MSI-X vector it names through a real eventfd.
 */
import { noFdLeakEachTest } from '../helpers/no-fd-leak.js';

noFdLeakEachTest();

// #region testing-a-device
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { PciIrq, serve } from 'vfio-user-ts';
import { VfioUserClient } from 'vfio-user-ts/client';
import { createMinimalDevice, MinimalReg } from '../../examples/minimal-device.js';

it('raises MSI-X vector 1, and only it, when the doorbell is written with 1', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'minimal-'));
  const socketPath = join(dir, 'minimal.sock');
  const dev = createMinimalDevice();
  const server = await serve(dev, { socketPath });
  const client = await VfioUserClient.connect(socketPath);
  try {
    await client.enableDevice(); // memory decoding + bus mastering, as a guest driver sets them
    await client.enableIrqs(PciIrq.MSIX, 2); // an eventfd for vectors 0 and 1
    await client.regionWrite(0, MinimalReg.DOORBELL, new Uint8Array([1, 0, 0, 0])); // BAR0, little-endian 1
    expect(await client.waitForIrq(PciIrq.MSIX, 1, 2000)).toBe(1);
    expect(client.irqCount(PciIrq.MSIX, 0)).toBe(0);
  } finally {
    client.close();
    await server.close();
    dev.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
// #endregion
