/**
 * Server-to-client DMA_READ / DMA_WRITE over the main socket (QEMU never asks
 * for a twin socket). Requests get their own ids; replies are matched by id in
 * the connection's receive path, so client requests keep flowing meanwhile.
 * Transfers are chunked by min(client's, our) max_data_xfer_size (a DMA_READ
 * reply must fit what we receive); each chunk has a
 * timeout that rejects with ETIMEDOUT (a late reply is then dropped with a warning).
 */
import type { Logger } from 'pino';
import type { ClientPort } from '../endpoint.js';
import { VfioUserError } from '../../protocol/errors.js';
import {
  VfioUserCommand,
  Errno,
  HeaderFlag,
  commandName,
  decodeDmaReadReply,
  decodeDmaWriteReply,
  encodeDmaReadRequest,
  encodeDmaWriteRequest,
  type MessageHeader,
} from '../../protocol/index.js';
import type { DmaRequestEvent } from './observer.js';

/** What the connection's observer is told about each DMA request (it adds the connection id). */
export type DmaRequestObserver = (event: Omit<DmaRequestEvent, 'conn'>) => void;

interface Pending {
  command: number;
  addr: bigint;
  count: number;
  resolve(msg: Uint8Array): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  /** Observed only: the request and when it was sent. */
  request?: Uint8Array;
  t0?: number;
}

/** How a ClientPort sends (the connection's channel). Returns false when the stream is closed. */
export type SendFn = (message: Uint8Array) => boolean;

export class ConnectionClientPort implements ClientPort {
  readonly log: Logger;
  readonly maxDataXferSize: number;
  readonly #send: SendFn;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  #closedReason: string | undefined;
  readonly #observe: DmaRequestObserver | undefined;

  constructor(send: SendFn, maxDataXferSize: number, timeoutMs: number, log: Logger, observe?: DmaRequestObserver) {
    this.#send = send;
    this.maxDataXferSize = Math.max(1, maxDataXferSize);
    this.#timeoutMs = timeoutMs;
    this.log = log;
    this.#observe = observe;
  }

  /** Tell the observer how request `id` ended. */
  #observed(id: number, p: Pending, errno: number, reply: Uint8Array | undefined): void {
    if (this.#observe === undefined || p.request === undefined) return;
    this.#observe({
      command: p.command,
      id,
      addr: p.addr,
      count: p.count,
      errno,
      durationMs: performance.now() - (p.t0 ?? 0),
      request: p.request,
      reply,
    });
  }

  async dmaRead(addr: bigint, length: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(length) || length < 0) throw VfioUserError.invalid(`dmaRead: bad length ${length}`);
    const out = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const n = Math.min(this.maxDataXferSize, length - done);
      const a = addr + BigInt(done);
      const reply = await this.#request(VfioUserCommand.DMA_READ, a, n, (id) => encodeDmaReadRequest(id, a, n));
      const r = decodeDmaReadReply(reply);
      if (r.addr !== a || r.count !== BigInt(n)) {
        throw new VfioUserError(Errno.EPROTO, `DMA_READ reply for ${r.addr}+${r.count}, asked ${a}+${n}`);
      }
      out.set(r.data, done);
      done += n;
    }
    return out;
  }

  async dmaWrite(addr: bigint, data: Uint8Array): Promise<void> {
    for (let done = 0; done < data.byteLength;) {
      const n = Math.min(this.maxDataXferSize, data.byteLength - done);
      const a = addr + BigInt(done);
      const chunk = data.subarray(done, done + n);
      const reply = await this.#request(VfioUserCommand.DMA_WRITE, a, n, (id) => encodeDmaWriteRequest(id, a, chunk));
      const r = decodeDmaWriteReply(reply);
      if (r.addr !== undefined && (r.addr !== a || r.count !== BigInt(n))) {
        throw new VfioUserError(Errno.EPROTO, `DMA_WRITE reply for ${r.addr}+${r.count}, asked ${a}+${n}`);
      }
      done += n;
    }
  }

  #request(command: number, addr: bigint, count: number, encode: (id: number) => Uint8Array): Promise<Uint8Array> {
    if (this.#closedReason !== undefined) {
      return Promise.reject(new VfioUserError(Errno.ENOTCONN, `client gone (${this.#closedReason})`));
    }
    let id = this.#nextId;
    for (let tries = 0; this.#pending.has(id); tries++) {
      if (tries > 0xffff) return Promise.reject(new VfioUserError(Errno.EAGAIN, 'too many DMA requests in flight'));
      id = (id + 1) & 0xffff;
    }
    this.#nextId = (id + 1) & 0xffff;
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        this.#observed(id, pending, Errno.ETIMEDOUT, undefined);
        reject(
          new VfioUserError(Errno.ETIMEDOUT, `${commandName(command)} id ${id} timed out after ${this.#timeoutMs} ms`),
        );
      }, this.#timeoutMs);
      const pending: Pending = { command, addr, count, resolve, reject, timer };
      this.#pending.set(id, pending);
      this.log.debug({ cmd: commandName(command), id, addr: `0x${addr.toString(16)}`, count }, 'send DMA request');
      const request = encode(id);
      if (this.#observe !== undefined) {
        pending.request = request;
        pending.t0 = performance.now();
      }
      if (!this.#send(request)) {
        clearTimeout(timer);
        this.#pending.delete(id);
        this.#observed(id, pending, Errno.ENOTCONN, undefined);
        reject(new VfioUserError(Errno.ENOTCONN, `${commandName(command)}: the stream is closed`));
      }
    });
  }

  /**
   * A reply arrived. Returns false when no request is waiting for it (the
   * caller logs and drops it). An error reply rejects with its errno (EINVAL
   * when outside 1..4096, as libvfio-user does).
   */
  handleReply(header: MessageHeader, message: Uint8Array): boolean {
    const p = this.#pending.get(header.id);
    if (p?.command !== header.command) return false;
    this.#pending.delete(header.id);
    clearTimeout(p.timer);
    if (header.flags & HeaderFlag.ERROR) {
      const errno = header.error >= 1 && header.error <= 4096 ? header.error : Errno.EINVAL;
      this.#observed(header.id, p, errno, message);
      p.reject(
        new VfioUserError(
          errno,
          `${commandName(p.command)} at 0x${p.addr.toString(16)}: client answered errno ${header.error}`,
        ),
      );
    } else {
      this.#observed(header.id, p, 0, message);
      p.resolve(message);
    }
    return true;
  }

  /** The stream is gone: reject every pending request and refuse new ones. */
  close(reason: string): void {
    if (this.#closedReason !== undefined) return;
    this.#closedReason = reason;
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      this.#observed(id, p, Errno.ENOTCONN, undefined);
      p.reject(new VfioUserError(Errno.ENOTCONN, `${commandName(p.command)} id ${id}: client gone (${reason})`));
    }
    this.#pending.clear();
  }
}
