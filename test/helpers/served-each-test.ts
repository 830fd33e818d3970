/**
 * Hosting devices for tests that hand them to a real QEMU: sockets in a temp
 * dir of the test's own, and everything closed and removed after each test.
 */
import { afterEach } from 'vitest';
import { createLogger, serve, silentLogger, type DeviceServer, type Logger } from '../../server/index.js';
import type { Endpoint } from '../../server/endpoint.js';
import { tempDir, type TempDir } from './temp.js';

/** A device a test serves; closed after the test when it has a close() (PciDevice does). */
export type ClosableEndpoint = Endpoint & { close?(): void };

export interface ServedEachTest {
  /** The logger to give devices and servers: silent unless LOG_LEVEL is set. */
  readonly log: Logger;
  /** Serve `device` on a fresh socket in the current test's temp dir; resolves to the socket path. */
  serve(device: ClosableEndpoint): Promise<string>;
}

/**
 * Registers an afterEach in the calling scope that closes every server the
 * test started through the returned `serve` (then its device) and removes the
 * test's temp dir (named after `prefix`).
 */
export function servedEachTest(prefix: string): ServedEachTest {
  const log = process.env.LOG_LEVEL ? createLogger({ pretty: false }) : silentLogger;
  let dir: TempDir | undefined;
  let hosted: Array<{ device: ClosableEndpoint; server?: DeviceServer }> = [];
  afterEach(async () => {
    const closing = hosted;
    hosted = [];
    for (const h of closing) {
      await h.server?.close();
      h.device.close?.();
    }
    dir?.remove();
    dir = undefined;
  });
  return {
    log,
    async serve(device) {
      dir ??= tempDir(prefix);
      const entry: { device: ClosableEndpoint; server?: DeviceServer } = { device };
      hosted.push(entry);
      const socketPath = dir.file(`dev${hosted.length - 1}.sock`);
      entry.server = await serve(device, { socketPath, log });
      return socketPath;
    },
  };
}
