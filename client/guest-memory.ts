/**
 * Guest memory a client offers a device for DMA: a memfd mapped into this
 * process (so its bytes are shared with the server after DMA_MAP with the fd),
 * or plain bytes that the client serves by message (DMA_READ/DMA_WRITE).
 */
import { native, type NativeMapping } from '../native/index.js';
import { Limits } from '../protocol/constants.js';

/** Bytes a client can DMA_MAP: `bytes` is what the device sees at the mapped addresses. */
export interface GuestBacking {
  /** The backing bytes (live view: writes are seen by the device). */
  readonly bytes: Uint8Array;
  /** An fd to send with DMA_MAP, when the memory is shareable. Owned by the backing. */
  readonly fd?: number;
}

/** A memfd of `size` bytes mapped read/write; close() releases both. */
export class GuestMemory implements GuestBacking {
  readonly fd: number;
  readonly size: number;
  private readonly mapping: NativeMapping;
  private view: Uint8Array;
  private closed = false;

  /** Create `size` bytes (rounded up to a page) of zeroed, shareable memory. */
  constructor(size: number, name = 'vfio-user-guest') {
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`bad guest memory size ${size}`);
    if (size > native.WINDOW_SIZE) throw new RangeError(`guest memory larger than ${native.WINDOW_SIZE} bytes`);
    this.size = Math.ceil(size / Limits.PGSIZE) * Limits.PGSIZE;
    // Sealed like QEMU's memory-backend-memfd: its size can no longer change.
    this.fd = native.memfdCreate(name, this.size, native.F_SEAL_SHRINK | native.F_SEAL_GROW);
    try {
      this.mapping = native.mmapFd(this.fd, 0, this.size, native.PROT_READ | native.PROT_WRITE);
    } catch (err) {
      native.closeFd(this.fd);
      throw err;
    }
    this.view = new Uint8Array(this.mapping.buffers[0]!, 0, this.size);
  }

  /** The whole memory as bytes (zero-length after close()). */
  get bytes(): Uint8Array {
    return this.view;
  }

  /** A DataView over [offset, offset+length). */
  dataView(offset = 0, length = this.size - offset): DataView {
    return new DataView(this.view.buffer, this.view.byteOffset + offset, length);
  }

  /** Copy `length` bytes out, starting at `offset`. */
  read(offset: number, length: number): Uint8Array {
    return this.view.slice(offset, offset + length);
  }

  /** Copy `data` in at `offset`. */
  write(offset: number, data: Uint8Array): void {
    this.view.set(data, offset);
  }

  /** Unmap and close the memfd. Idempotent. Unmap it from the device first. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.mapping.unmap();
    this.view = new Uint8Array(0);
    native.closeFd(this.fd);
  }
}
