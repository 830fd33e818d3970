/**
 * DEVICE_FEATURE (16): the codec, and no device features are supported
 * (migration, dirty page logging), so every request is EINVAL and the
 * connection lives.
 */
import { describe, expect, it } from 'vitest';
import * as P from '../../protocol/index.js';
import { Errno, PciIrq } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import { DEVICE_KINDS, expectErrno } from '../helpers/harness.js';
import type { VfioUserClient } from '../../client/index.js';

describe('codec', () => {
  it('DEVICE_FEATURE round-trips', () => {
    const f = P.decodeDeviceFeature(
      P.encodeDeviceFeatureRequest(1, { flags: P.DeviceFeatureFlag.GET | 1, data: new Uint8Array(8) }),
    );
    expect(f).toMatchObject({ argsz: 16, flags: 0x10001 });
  });
});

describe.each(DEVICE_KINDS)('%s', (_kind, make) => {
  let client: VfioUserClient;
  connectedEachTest((connected) => {
    client = connected;
  }, make);

  it('DEVICE_FEATURE without migration: EINVAL, connection alive', async () => {
    await expectErrno(client.deviceFeature(1 | (1 << 16), new Uint8Array(8)), Errno.EINVAL);
    expect((await client.getDeviceInfo()).numIrqs).toBe(PciIrq.COUNT);
  });
});
