/**
 * MIG_DATA_READ (17) and MIG_DATA_WRITE (18): the codec, and migration is not
 * supported, so well-formed requests are EINVAL too (libvfio-user without
 * migration does the same) and the connection lives.
 */
import { describe, expect, it } from 'vitest';
import * as P from '../../protocol/index.js';
import { VfioUserCommand, Errno } from '../../protocol/constants.js';
import { connectedEachTest } from '../helpers/per-test.js';
import { expectAlive, expectErrorReply, rawRequest } from '../helpers/harness.js';
import type { VfioUserClient } from '../../client/index.js';

describe('codec', () => {
  it('MIG_DATA_READ / MIG_DATA_WRITE round-trip', () => {
    expect(P.decodeMigDataReadRequest(P.encodeMigDataReadRequest(1, 100))).toEqual({ argsz: 108, size: 100 });
    expect(P.decodeMigDataReadReply(P.encodeMigDataReadReply(1, new Uint8Array(3))).size).toBe(3);
    expect(P.decodeMigDataWriteRequest(P.encodeMigDataWriteRequest(1, new Uint8Array(5))).size).toBe(5);
  });
});

describe('without migration', () => {
  let c: VfioUserClient;
  connectedEachTest((client) => {
    c = client;
  });

  it('a well-formed MIG_DATA_READ or MIG_DATA_WRITE: EINVAL, alive', async () => {
    const read = P.encodeMigDataReadRequest(0, 64).subarray(16);
    expectErrorReply(await rawRequest(c, { command: VfioUserCommand.MIG_DATA_READ }, read), Errno.EINVAL);
    const write = P.encodeMigDataWriteRequest(0, new Uint8Array(8)).subarray(16);
    expectErrorReply(await rawRequest(c, { command: VfioUserCommand.MIG_DATA_WRITE }, write), Errno.EINVAL);
    await expectAlive(c);
  });
});
