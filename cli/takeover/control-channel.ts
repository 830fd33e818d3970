/**
 * The takeover control socket's messages (cli/takeover): a JSON object, an
 * optional blob (the devices' saved states, back to back) and fds over
 * SCM_RIGHTS. Framed like a vfio-user message so the native channel carries
 * them: a 16-byte header whose bytes 4-8 are the whole size, then the JSON's
 * length (u32 LE), the JSON, the blob.
 */
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { native } from '../../native/index.js';
import { Channel } from '../../server/transport/index.js';

/** Version of this protocol: a process refuses a peer with another one. */
export const TAKEOVER_PROTOCOL_VERSION = 1;

/** Largest control message (the saved states of every device travel in one). */
const MAX_MESSAGE = 256 << 20;
/** Most fds on one message (one listening socket per device). */
const MAX_FDS = 253;
const HEADER = 16;

/**
 * The socket a daemon takes takeover requests on: `vfio-user-ts.control` in
 * its first device's socket folder, so the process taking over finds it from
 * the same config whatever its environment.
 */
export function controlSocketPath(firstSocket: string | undefined): string | undefined {
  return firstSocket === undefined ? undefined : join(dirname(firstSocket), 'vfio-user-ts.control');
}

export interface ControlMessage {
  json: Record<string, unknown> & { type: string };
  blob: Uint8Array;
  /** Owned by the receiver. */
  fds: number[];
}

/** One end of a control connection: send messages, await the next one. */
export class ControlChannel {
  readonly #channel: Channel;
  readonly #queue: ControlMessage[] = [];
  #waiter: { resolve: (m: ControlMessage) => void; reject: (e: Error) => void } | undefined;
  #closed: string | undefined;

  /** Takes ownership of the connected socket `fd`. */
  constructor(fd: number, log: Logger) {
    this.#channel = new Channel(
      fd,
      { maxMessageSize: MAX_MESSAGE, maxFds: MAX_FDS },
      {
        onMessage: (bytes, received) => {
          const fds = received.takeAll();
          let message: ControlMessage;
          try {
            message = decode(bytes, fds);
          } catch (err) {
            for (const f of fds) closeQuietly(f);
            this.#fail(`bad control message: ${(err as Error).message}`);
            return;
          }
          if (this.#waiter) {
            const w = this.#waiter;
            this.#waiter = undefined;
            w.resolve(message);
          } else this.#queue.push(message);
        },
        onClose: (reason) => this.#fail(reason),
      },
      log,
    );
  }

  send(json: ControlMessage['json'], blob: Uint8Array = new Uint8Array(0), fds: readonly number[] = []): void {
    const text = Buffer.from(JSON.stringify(json));
    const size = HEADER + 4 + text.length + blob.length;
    const out = Buffer.alloc(size);
    out.writeUInt32LE(size, 4);
    out.writeUInt32LE(text.length, HEADER);
    text.copy(out, HEADER + 4);
    out.set(blob, HEADER + 4 + text.length);
    if (this.#channel.send(out, fds) < 0) throw new Error(`control connection: ${this.#closed ?? 'closed'}`);
  }

  /** The next message; rejects when the peer hangs up first (or after `timeoutMs`). */
  receive(timeoutMs: number): Promise<ControlMessage> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#closed !== undefined) return Promise.reject(new Error(`control connection: ${this.#closed}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        reject(new Error(`control connection: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiter = {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  close(): void {
    this.#closed ??= 'closed';
    this.#channel.close();
    for (const m of this.#queue.splice(0)) for (const f of m.fds) closeQuietly(f);
  }

  #fail(reason: string): void {
    this.#closed ??= reason;
    this.#channel.close();
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(new Error(`control connection: ${reason}`));
  }
}

function decode(bytes: Buffer, fds: number[]): ControlMessage {
  if (bytes.length < HEADER + 4) throw new Error('too short');
  const jsonLength = bytes.readUInt32LE(HEADER);
  if (HEADER + 4 + jsonLength > bytes.length) throw new Error('JSON runs past the message');
  const json: unknown = JSON.parse(bytes.subarray(HEADER + 4, HEADER + 4 + jsonLength).toString('utf8'));
  if (typeof json !== 'object' || json === null || typeof (json as { type?: unknown }).type !== 'string')
    throw new Error('no message type');
  return {
    json: json as ControlMessage['json'],
    blob: new Uint8Array(bytes.subarray(HEADER + 4 + jsonLength)),
    fds,
  };
}

export function closeQuietly(fd: number): void {
  try {
    native.closeFd(fd);
  } catch {
    // Already closed.
  }
}
