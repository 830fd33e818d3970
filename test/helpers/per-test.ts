/**
 * Per-test device set-up shared by the protocol tests. Each function registers
 * vitest hooks in the scope it is called from (a file or a describe block):
 * every test gets a fresh device and must end with the process holding
 * exactly the fds it had before the test (see no-fd-leak.ts for tests without a device).
 */
import { afterEach, beforeEach } from 'vitest';
import type { VfioUserClient } from '../../client/index.js';
import type { Endpoint } from '../../server/endpoint.js';
import type { ServeOptions } from '../../server/server.js';
import type { DeviceUnderTest } from './device-under-test.js';
import { fdBaseline, type FdBaseline } from './fds.js';
import { startDevice, type RunningDevice } from './harness.js';

/**
 * Each test gets a device (from `make`; default: a fresh PciTestDevice) served
 * on its own temp socket (with `options` for serve()), handed to `onStarted` before the test runs. After the
 * test the server is stopped (its clients closed) and no fd may be left open.
 */
export function deviceEachTest<E extends Endpoint = DeviceUnderTest>(
  onStarted: (run: RunningDevice<E>) => void | Promise<void>,
  make?: () => E,
  options?: Omit<ServeOptions, 'socketPath' | 'log'>,
): void {
  let fds: FdBaseline;
  let run: RunningDevice<E>;
  beforeEach(async () => {
    fds = fdBaseline();
    run = await startDevice(make?.(), options);
    await onStarted(run);
  });
  afterEach(async () => {
    await run.stop();
    await fds.settle();
  });
}

/** As deviceEachTest, with one negotiated client connected for each test. */
export function connectedEachTest(
  onConnected: (client: VfioUserClient, run: RunningDevice) => void,
  make?: () => DeviceUnderTest,
): void {
  deviceEachTest(async (run) => onConnected(await run.connect(), run), make);
}
