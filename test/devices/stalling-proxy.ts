/**
 * A vfio-user proxy between a client and a server (two real sockets) that
 * can hold the server's DMA_READ / DMA_WRITE requests: what QEMU does while
 * a vCPU waits for the reply to a synchronous request (it holds the BQL, so
 * its vfio-user code cannot answer our DMA until we answer it), or what a
 * hostile client does on purpose. Everything else, fds included, passes
 * through unchanged and in order.
 */
import { native, type NativeChannel } from '../../native/index.js';
import { HeaderFlag, VfioUserCommand } from '../../protocol/constants.js';
import { decodeHeader } from '../../protocol/header.js';
import { silentLogger } from '../../server/log.js';
import { Listener } from '../../server/transport/listener.js';
import { tempSocketPath } from '../helpers/temp.js';

const CHANNEL = { maxMessageSize: (1 << 20) + 4096, maxFds: 253 };

export class StallingProxy {
  /** Hold the server's DMA requests (they reach the client on release()). */
  stallDma = false;
  private readonly held: Uint8Array[] = [];
  private down: NativeChannel | undefined;
  private up: NativeChannel | undefined;

  private constructor(
    /** Where clients connect. */
    readonly path: string,
    private readonly listener: Listener,
    private readonly cleanup: () => void,
  ) {}

  /** Listen on a fresh socket; each client is connected through to `upstream`. */
  static async open(upstream: string): Promise<StallingProxy> {
    const sock = tempSocketPath('proxy');
    const ref: { proxy?: StallingProxy } = {};
    const listener = await Listener.open(sock.path, (fd) => ref.proxy?.accept(fd, upstream), silentLogger);
    ref.proxy = new StallingProxy(sock.path, listener, () => sock.remove());
    return ref.proxy;
  }

  /** DMA requests held so far (not yet released). */
  get heldRequests(): number {
    return this.held.length;
  }

  /** Stop holding and pass every held DMA request on (late: the server may have given up on them). */
  release(): void {
    this.stallDma = false;
    for (const m of this.held.splice(0)) this.sendDown(m, []);
  }

  private accept(fd: number, upstream: string): void {
    const upFd = native.connectUnix(upstream);
    const closeBoth = (): void => {
      for (const ch of [this.down, this.up]) {
        try {
          ch?.close();
        } catch {
          // already closed
        }
      }
    };
    this.down = native.openChannel(fd, CHANNEL, (msg, fds) => this.forward(this.up, msg, fds), closeBoth);
    this.up = native.openChannel(
      upFd,
      CHANNEL,
      (msg, fds) => {
        const h = decodeHeader(msg);
        const isRequest = (h.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.TYPE_COMMAND;
        const isDma = h.command === VfioUserCommand.DMA_READ || h.command === VfioUserCommand.DMA_WRITE;
        if (this.stallDma && isRequest && isDma) {
          this.held.push(Uint8Array.from(msg));
          for (const f of fds) native.closeFd(f);
          return;
        }
        this.sendDown(msg, fds);
      },
      closeBoth,
    );
  }

  private sendDown(msg: Uint8Array, fds: number[]): void {
    this.forward(this.down, msg, fds);
  }

  /** Send on `ch` (fds are borrowed by send: ours are closed after it). */
  private forward(ch: NativeChannel | undefined, msg: Uint8Array, fds: number[]): void {
    try {
      ch?.send(msg, fds);
    } catch {
      // that side is gone: its close callback tears the other down
    } finally {
      for (const f of fds) native.closeFd(f);
    }
  }

  close(): void {
    this.held.length = 0;
    for (const ch of [this.down, this.up]) {
      try {
        ch?.close();
      } catch {
        // already closed
      }
    }
    this.listener.close();
    this.cleanup();
  }
}
