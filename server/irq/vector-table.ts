/**
 * One IRQ index (INTx, MSI, MSI-X, ERR or REQ): its vectors' eventfds, the
 * mask state the client set with SET_IRQS MASK/UNMASK, and pending bits.
 * Owns the eventfds: a replaced or removed one is closed at once.
 */
import { native } from '../../native/index.js';

export class VectorTable {
  /** The client enabled this index (a TRIGGER with EVENTFD data, even with no fds). */
  enabled = false;
  private readonly fds: (number | undefined)[];
  private readonly masked: boolean[];
  private readonly pending: boolean[];

  constructor(readonly count: number) {
    this.fds = new Array<number | undefined>(count).fill(undefined);
    this.masked = new Array<boolean>(count).fill(false);
    this.pending = new Array<boolean>(count).fill(false);
  }

  fd(vector: number): number | undefined {
    return this.fds[vector];
  }
  /** Install (or with undefined, remove) a vector's eventfd, closing the one it replaces. */
  setFd(vector: number, fd: number | undefined): void {
    const old = this.fds[vector];
    if (old !== undefined && old !== fd) closeQuietly(old);
    this.fds[vector] = fd;
  }

  isMasked(vector: number): boolean {
    return this.masked[vector]!;
  }
  setMasked(vector: number, masked: boolean): void {
    this.masked[vector] = masked;
  }
  isPending(vector: number): boolean {
    return this.pending[vector]!;
  }
  setPending(vector: number, pending: boolean): void {
    this.pending[vector] = pending;
  }

  /** Write 1 to the vector's eventfd. False if it has none (or the write failed). */
  signal(vector: number): boolean {
    const fd = this.fds[vector];
    if (fd === undefined) return false;
    try {
      native.eventfdWrite(fd);
      return true;
    } catch {
      // A non-eventfd fd from a hostile client (EINVAL) or a full counter (EAGAIN): drop this interrupt.
      return false;
    }
  }

  /** Close every eventfd and forget mask and pending state. */
  clear(): void {
    for (let v = 0; v < this.count; v++) {
      this.setFd(v, undefined);
      this.masked[v] = false;
      this.pending[v] = false;
    }
    this.enabled = false;
  }

  /** Swap every vector's eventfd with `other`'s (same count; a device reload hands them over). */
  exchangeFds(other: VectorTable): void {
    for (let v = 0; v < this.count; v++) {
      const mine = this.fds[v];
      this.fds[v] = other.fds[v];
      other.fds[v] = mine;
    }
  }

  /** Forget mask and pending state; keep the eventfds. */
  clearState(): void {
    this.masked.fill(false);
    this.pending.fill(false);
  }
}

/** close(2) an fd we own, ignoring EBADF (never throw from cleanup). */
export function closeQuietly(fd: number): void {
  try {
    native.closeFd(fd);
  } catch {
    // already closed
  }
}
