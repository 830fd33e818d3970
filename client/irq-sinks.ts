/**
 * Client-side interrupt sinks: eventfds handed to the server with SET_IRQS,
 * watched on the event loop, so a test can await a vector's next signal.
 */
import { native, type Watcher } from '../native/index.js';
import { Errno, VfioUserCommand } from '../protocol/constants.js';
import { VfioUserClientError } from './errors.js';

interface Waiter {
  resolve(count: number): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** One vector's eventfd, its watcher and the signals not yet consumed by waitForIrq. */
class IrqVector {
  readonly fd: number;
  private readonly watcher: Watcher;
  /** Signals counted but not yet handed to a waiter. */
  pending = 0;
  /** All signals ever counted. */
  total = 0;
  private waiters: Waiter[] = [];

  constructor() {
    this.fd = native.eventfd(0);
    this.watcher = native.watchReadable(this.fd, () => this.onReadable());
  }

  private onReadable(): void {
    const n = native.eventfdRead(this.fd);
    if (n === 0) return;
    this.total += n;
    this.pending += n;
    const w = this.waiters.shift();
    if (w) {
      clearTimeout(w.timer);
      const got = this.pending;
      this.pending = 0;
      w.resolve(got);
    }
  }

  wait(timeoutMs: number, describe: string): Promise<number> {
    if (this.pending > 0) {
      const got = this.pending;
      this.pending = 0;
      return Promise.resolve(got);
    }
    return new Promise<number>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== waiter);
          reject(
            new VfioUserClientError(
              Errno.ETIMEDOUT,
              VfioUserCommand.DEVICE_SET_IRQS,
              `no interrupt on ${describe} within ${timeoutMs} ms`,
            ),
          );
        }, timeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  close(reason: Error): void {
    this.watcher.close();
    native.closeFd(this.fd);
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(reason);
    }
  }
}

/** Every eventfd the client created, by IRQ index and vector. */
export class IrqSinks {
  private readonly byIndex = new Map<number, Map<number, IrqVector>>();

  /** Create eventfds for [start, start+count) of `index` (replacing existing ones); returns their fds in order. */
  create(index: number, start: number, count: number): number[] {
    let vectors = this.byIndex.get(index);
    if (!vectors) this.byIndex.set(index, (vectors = new Map<number, IrqVector>()));
    const fds: number[] = [];
    for (let v = start; v < start + count; v++) {
      vectors
        .get(v)
        ?.close(new VfioUserClientError(Errno.ECONNRESET, VfioUserCommand.DEVICE_SET_IRQS, 'eventfd replaced'));
      const vec = new IrqVector();
      vectors.set(v, vec);
      fds.push(vec.fd);
    }
    return fds;
  }

  /** Close the eventfds of `index` (all vectors, or [start, start+count)). */
  remove(index: number, start = 0, count = Infinity): void {
    const vectors = this.byIndex.get(index);
    if (!vectors) return;
    for (const [v, vec] of vectors) {
      if (v < start || v >= start + count) continue;
      vec.close(new VfioUserClientError(Errno.ECONNRESET, VfioUserCommand.DEVICE_SET_IRQS, 'interrupt disabled'));
      vectors.delete(v);
    }
  }

  private vector(index: number, vector: number): IrqVector {
    const vec = this.byIndex.get(index)?.get(vector);
    if (!vec)
      throw new VfioUserClientError(
        Errno.ENOENT,
        VfioUserCommand.DEVICE_SET_IRQS,
        `no eventfd for IRQ ${index} vector ${vector}`,
      );
    return vec;
  }

  /** Resolve with the number of signals once `vector` of `index` has been signalled (consumes them). */
  wait(index: number, vector: number, timeoutMs: number): Promise<number> {
    return this.vector(index, vector).wait(timeoutMs, `IRQ ${index} vector ${vector}`);
  }

  /** Signals seen so far on a vector (0 if it has no eventfd). */
  count(index: number, vector: number): number {
    return this.byIndex.get(index)?.get(vector)?.total ?? 0;
  }

  closeAll(reason: Error): void {
    for (const vectors of this.byIndex.values()) for (const vec of vectors.values()) vec.close(reason);
    this.byIndex.clear();
  }
}
