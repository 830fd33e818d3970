/**
 * `vfio-user-ts inspect SOCKET [--probe-bars] [--json]`: connect to any
 * vfio-user server as a client, describe its device (collect.ts, format.ts)
 * and disconnect. It negotiates like QEMU, asks for information, reads config
 * space, and writes nothing unless --probe-bars (which restores what it wrote).
 */
import { parseArgs } from 'node:util';
import { VfioUserClient } from '../../client/index.js';
import { INSPECT_HELP } from '../help.js';
import { inspectDevice } from './collect.js';
import { formatReport } from './format.js';

const SPEC = {
  help: { type: 'boolean', short: 'h' },
  'probe-bars': { type: 'boolean' },
  json: { type: 'boolean' },
  timeout: { type: 'string' },
} as const;

export async function inspectCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: SPEC, allowPositionals: true, strict: true });
  } catch (err) {
    process.stderr.write(`vfio-user-ts inspect: ${(err as Error).message}\n\n${INSPECT_HELP}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(INSPECT_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    process.stderr.write(`vfio-user-ts inspect: give one socket path\n\n${INSPECT_HELP}`);
    return 2;
  }
  const timeoutMs = values.timeout === undefined ? 5000 : Number(values.timeout);
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
    process.stderr.write(`vfio-user-ts inspect: --timeout must be a positive number of ms\n`);
    return 2;
  }
  const socket = positionals[0]!;
  let client: VfioUserClient;
  try {
    client = await VfioUserClient.connect(socket, { timeoutMs });
  } catch (err) {
    process.stderr.write(`vfio-user-ts inspect: cannot connect to ${socket}: ${(err as Error).message}\n`);
    return 1;
  }
  try {
    const report = await inspectDevice(client, socket, { probeBars: values['probe-bars'] === true });
    process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
    return 0;
  } catch (err) {
    process.stderr.write(`vfio-user-ts inspect: ${socket}: ${(err as Error).message}\n`);
    return 1;
  } finally {
    client.close();
  }
}
