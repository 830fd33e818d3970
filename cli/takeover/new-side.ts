/**
 * `serve --takeover`, the new process's side: ask the running daemon for its
 * devices over its control socket, then tell it whether they were adopted
 * (it lets go and exits) or not (it resumes and serves on).
 */
import type { Logger } from 'pino';
import { native } from '../../native/index.js';
import type { DeviceSpec } from '../config.js';
import type { CarriedDevice } from '../daemon.js';
import { closeQuietly, ControlChannel, TAKEOVER_PROTOCOL_VERSION } from './control-channel.js';

/** How long the old process may take to quiesce and save its devices, and to let go of them. */
const ANSWER_TIMEOUT_MS = 30_000;

/** A hand-over in progress: the devices received, and how to end it. */
export interface TakeoverRequest {
  readonly carried: ReadonlyMap<string, CarriedDevice>;
  /** Everything was adopted: the old process closes its copies and exits; resolves once it let go. */
  adopted(): Promise<void>;
  /** Something failed here: the old process resumes and serves on. Closes the fds still held. */
  failed(reason: string): void;
}

/** Connect to the daemon at `controlPath` and receive the devices `devices` keeps (same name and socket). */
export async function requestTakeover(
  controlPath: string,
  devices: readonly DeviceSpec[],
  log: Logger,
): Promise<TakeoverRequest> {
  let fd: number;
  try {
    fd = native.connectUnix(controlPath);
  } catch (err) {
    throw new Error(`no running daemon to take over at ${controlPath}: ${(err as Error).message}`, { cause: err });
  }
  const channel = new ControlChannel(fd, log);
  const carried = new Map<string, CarriedDevice>();
  try {
    channel.send({
      type: 'hello',
      version: TAKEOVER_PROTOCOL_VERSION,
      pid: process.pid,
      devices: devices.map((d) => ({ name: d.name, socket: d.socket })),
    });
    const offer = await channel.receive(ANSWER_TIMEOUT_MS);
    if (offer.json.type === 'refused') {
      for (const f of offer.fds) closeQuietly(f);
      throw new Error(`the running daemon refused the takeover: ${String(offer.json.reason)}`);
    }
    const list = offer.json.devices;
    if (offer.json.type !== 'offer' || !Array.isArray(list) || list.length !== offer.fds.length) {
      for (const f of offer.fds) closeQuietly(f);
      throw new Error(`unexpected answer from the running daemon: ${JSON.stringify(offer.json).slice(0, 200)}`);
    }
    let at = 0;
    for (const [i, entry] of (list as unknown[]).entries()) {
      const d = entry as Partial<Record<'name' | 'socket' | 'activated' | 'stateBytes', unknown>>;
      const bytes = d.stateBytes;
      if (
        typeof d.name !== 'string' ||
        typeof d.socket !== 'string' ||
        typeof bytes !== 'number' ||
        !Number.isSafeInteger(bytes) ||
        bytes < 0 ||
        at + bytes > offer.blob.length
      ) {
        for (const f of offer.fds.slice(i)) closeQuietly(f);
        throw new Error(`the running daemon sent a bad device entry: ${JSON.stringify(entry).slice(0, 200)}`);
      }
      carried.set(d.name, {
        name: d.name,
        socket: d.socket,
        fd: offer.fds[i]!,
        state: offer.blob.subarray(at, at + bytes),
        activated: d.activated === true,
      });
      at += bytes;
    }
  } catch (err) {
    for (const c of carried.values()) closeQuietly(c.fd);
    try {
      channel.send({ type: 'failed', reason: (err as Error).message });
    } catch {
      // It hung up: it resumes by itself.
    }
    channel.close();
    throw err;
  }
  log.info(
    { devices: [...carried.keys()], control: controlPath },
    'takeover: devices received from the running daemon',
  );
  return {
    carried,
    async adopted() {
      try {
        channel.send({ type: 'adopted' });
        const answer = await channel.receive(ANSWER_TIMEOUT_MS);
        if (answer.json.type !== 'released')
          throw new Error(`unexpected answer from the old daemon: ${JSON.stringify(answer.json).slice(0, 200)}`);
      } finally {
        channel.close();
      }
    },
    failed(reason) {
      try {
        channel.send({ type: 'failed', reason });
      } catch {
        // It hung up: it resumes by itself.
      }
      channel.close();
    },
  };
}
