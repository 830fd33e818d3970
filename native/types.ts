/**
 * The JavaScript contract of the native addon (native/src): what
 * `native/index.ts` exports as `native`, and below it the raw shapes the addon
 * itself has where they differ (its channel, which the StagedChannel wraps).
 *
 * Ownership rule: a function that *returns* an fd gives it to the caller, who
 * must close it with `closeFd`; a function that *takes* an fd borrows it unless
 * its doc says it takes ownership.
 */
/** A connected vfio-user stream, polled on this thread's libuv loop. */
export interface NativeChannel {
  /**
   * Queue one whole message for sending. The fds (borrowed; the caller may
   * close them after this returns) ride as SCM_RIGHTS on the message's first
   * byte. Never blocks: what the socket does not take now is sent when it is
   * writable. Throws an Error with `.code` (e.g. 'EPIPE') if the channel is closed.
   * Returns the bytes still queued after this call (pendingBytes: 0 when the kernel took everything).
   */
  send(message: Uint8Array, fds?: readonly number[]): number;
  /** Stop polling and close the socket; fds received but not yet delivered are closed. Idempotent; onClose is not called. */
  close(): void;
  /** True once close() was called or onClose was delivered (the socket is then closed). */
  readonly closed: boolean;
  /** Bytes accepted by send() that the kernel has not taken yet. */
  readonly pendingBytes: number;
  /** The socket fd (still owned by the channel: closeFd on it throws EBUSY while open); -1 once closed. */
  readonly fd: number;
}

export interface ChannelOptions {
  /**
   * Largest message (header included) delivered whole. A header announcing
   * more: its body is read and discarded, and onMessage gets only the 16-byte
   * header (so the caller can answer EINVAL and the stream stays in sync).
   */
  maxMessageSize: number;
  /**
   * Room for this many fds per recvmsg. More (MSG_CTRUNC) is fatal: onClose('EFAULT ...'). So is a message that
   * collects more than maxFds fds over several writes.
   */
  maxFds: number;
}

/**
 * Called once per complete message, through MakeCallback (promise and nextTick
 * queues drain between messages). `message` is a fresh Buffer owned by JS.
 * `fds` are the fds that arrived with the message's bytes, now owned by JS.
 * Attribution: Linux ends a recvmsg right after the data that carried fds, so
 * the fds of one recvmsg go to the message holding that recvmsg's *last* byte
 * (the same message as its first byte unless the read started in the tail of
 * an earlier message). Senders must start each message that carries fds with
 * its own sendmsg and put no other message's bytes in it (QEMU and
 * NativeChannel.send do).
 * A header whose size field is < 16 is delivered as those 16 bytes and reading
 * stops (the stream cannot be re-framed; the caller replies and closes).
 */
export type MessageCallback = (message: Buffer, fds: number[]) => void;
/**
 * Called once when the peer hangs up or a socket error occurs ('EOF', or an
 * errno name with detail, e.g. 'EFAULT: peer sent more fds...'). The channel is
 * already closed when it runs (socket, queued and undelivered fds released).
 */
export type CloseCallback = (reason: string) => void;

/** An mmap of an fd exposed to JS as external ArrayBuffers. */
export interface NativeMapping {
  readonly length: number;
  /** Windows of at most WINDOW_SIZE bytes covering [0, length) in order. */
  readonly buffers: ArrayBuffer[];
  readonly mapped: boolean;
  /**
   * Detach every ArrayBuffer (their views become zero-length; DataView access
   * throws) and replace the range with a PROT_NONE placeholder. The finalizer
   * munmaps the placeholder. Idempotent. Views handed to asynchronous I/O
   * (fs.readv...) keep raw pointers that detaching cannot revoke: the caller
   * must wait for such I/O first (server/dma's holds do).
   */
  unmap(): void;
}

export interface Watcher {
  /** Stop watching (does not close the fd). Idempotent. */
  close(): void;
}

export interface NativeBinding {
  /** Largest ArrayBuffer window (4 GiB on Node 20). */
  readonly WINDOW_SIZE: number;
  readonly PROT_READ: number;
  readonly PROT_WRITE: number;

  /** socket+bind+listen on a UNIX stream path; non-blocking, CLOEXEC. Returns the listening fd. Throws (code EADDRINUSE etc.). */
  listenUnix(path: string, backlog: number): number;
  /**
   * Watch a listening fd: accept4(NONBLOCK|CLOEXEC) every pending client and hand each fd over (owned by the callee).
   * Polls a private dup of `fd` (closing `fd` first is harmless; the listener stays open until the watcher closes).
   * Transient accept errors (ECONNABORTED, EINTR) are skipped; any other (EMFILE...) calls onError once and stops the watcher.
   */
  watchListener(fd: number, onAccept: (clientFd: number) => void, onError: (reason: string) => void): Watcher;
  /** Blocking connect to a UNIX stream path; the returned fd is then set non-blocking and CLOEXEC. */
  connectUnix(path: string): number;
  /** socketpair(AF_UNIX, SOCK_STREAM|NONBLOCK|CLOEXEC). */
  socketpair(): [number, number];
  /**
   * sd_notify: send `state` ("READY=1\nSTATUS=...") as one datagram to the
   * AF_UNIX socket `path` ($NOTIFY_SOCKET; a leading '@' means the abstract
   * namespace). Never blocks; throws an errno Error (ENOENT, ECONNREFUSED, EAGAIN...).
   */
  sdNotify(path: string, state: string): void;
  /**
   * Take ownership of a connected stream fd and start polling it (throws ENOTSOCK etc.; on a throw the fd stays
   * the caller's). maxMessageSize must be in [16, 2^30], maxFds in [0, 253].
   */
  openChannel(fd: number, options: ChannelOptions, onMessage: MessageCallback, onClose: CloseCallback): NativeChannel;

  /**
   * mmap(MAP_SHARED) `length` bytes of `fd` at `offset` (both page-aligned). Borrows fd (the mapping stays valid after closeFd).
   * A regular file (memfd) must be at least offset+length long (EINVAL otherwise: touching pages past EOF is SIGBUS).
   * Writing through a view of a PROT_READ-only mapping faults the process: check permissions before writing.
   */
  mmapFd(fd: number, offset: number, length: number, prot: number): NativeMapping;

  /** eventfd(initval, EFD_NONBLOCK|EFD_CLOEXEC). */
  eventfd(initval?: number): number;
  /** Add `value` (default 1) to an eventfd counter (8-byte write). Throws on EBADF. */
  eventfdWrite(fd: number, value?: number): void;
  /** Read and reset an eventfd counter; 0 if it was zero (EAGAIN). */
  eventfdRead(fd: number): number;
  /**
   * Call onReadable (through MakeCallback) whenever fd polls readable (level-triggered: the callback must drain it,
   * e.g. eventfdRead). Polls a private dup of `fd`, so closing `fd` before the watcher is harmless.
   */
  watchReadable(fd: number, onReadable: () => void): Watcher;
  /**
   * memfd_create(name, MFD_CLOEXEC) + ftruncate(size); with `seals` (F_SEAL_*
   * bits), MFD_ALLOW_SEALING and F_ADD_SEALS after sizing (as QEMU seals its
   * memory-backend-memfd: SHRINK | GROW | SEAL).
   */
  memfdCreate(name: string, size: number, seals?: number): number;
  /** fcntl(F_GET_SEALS): the seals of a memfd, or -1 for a file that cannot be sealed (EINVAL). */
  fdSeals(fd: number): number;
  readonly F_SEAL_SHRINK: number;
  readonly F_SEAL_GROW: number;
  /** close(2); throws on EBADF, and EBUSY for the fd of an open channel (close the channel instead). */
  closeFd(fd: number): void;
  /** dup(2) with CLOEXEC. */
  dupFd(fd: number): number;

  /**
   * One preadv2(fd, views, position, RWF_NOWAIT) on the calling thread: reads
   * only what is already in the page cache and never blocks. Returns the bytes
   * read (possibly short: continue from there; 0 at EOF), NOWAIT_WOULD_BLOCK (-1)
   * when nothing was cached (EAGAIN: use an async read), or NOWAIT_UNSUPPORTED
   * (-2) when the fd or kernel cannot do RWF_NOWAIT (EOPNOTSUPP/EINVAL: stop
   * trying on this fd). Views are written synchronously, so any ArrayBufferView
   * (including views of a NativeMapping) is safe; at most IOV_MAX (1024) views.
   * Throws a TypeError/RangeError for bad arguments, an errno Error (EBADF, EFAULT...) otherwise.
   */
  preadvNowait(fd: number, views: readonly ArrayBufferView[], position: number): number;
  /** FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (same value as the FALLOC_PUNCH_HOLE export). */
  readonly FALLOC_PUNCH_HOLE: number;
  /** FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE (same value as the FALLOC_ZERO_RANGE export). */
  readonly FALLOC_ZERO_RANGE: number;
  /**
   * fallocate(2) on a worker thread (retried on EINTR). `mode` may only combine
   * FALLOC_FL_KEEP_SIZE (1), PUNCH_HOLE (2) and ZERO_RANGE (0x10): use
   * FALLOC_PUNCH_HOLE or FALLOC_ZERO_RANGE. offset and length are non-negative
   * safe integers, length > 0. Rejects with a TypeError/RangeError for bad
   * arguments, else an errno Error with `.code`/`.syscall` (EBADF, EOPNOTSUPP when the
   * file system cannot do that mode, ENODEV for a pipe...). A punched or zeroed
   * range reads as zeros afterwards; KEEP_SIZE leaves the file size unchanged.
   */
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  /**
   * fallocate(2) on the calling thread (it blocks: for probes and setup, not
   * the I/O path). Same arguments as fallocate; throws what it would reject with.
   */
  fallocateSync(fd: number, mode: number, offset: number, length: number): void;
  /**
   * sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) on a worker
   * thread: start writing the range's dirty pages back without waiting for
   * them (so a later fdatasync has less to do; it is still what makes data
   * durable). Length 0: to the end of the file. Rejects with an errno error.
   */
  startWriteback(fd: number, offset: number, length: number): Promise<void>;
}

/** Options of the addon's own openChannel: ChannelOptions plus the channel's two staging buffers (see staged-channel.ts). */
export interface AddonChannelOptions extends ChannelOptions {
  /** Messages of up to its length are copied here and delivered as their length (at least 16 bytes). */
  receiveStaging: ArrayBuffer;
  /** sendStaged(length) sends its first `length` bytes (not empty). */
  sendStaging: ArrayBuffer;
}

/**
 * The addon's message callback: a message that fit the receive staging buffer
 * arrives as its length (the bytes are in that buffer until the callback
 * returns), a larger one as a fresh Buffer; `fds` is undefined when none came.
 */
export type AddonMessageCallback = (message: number | Buffer, fds: number[] | undefined) => void;

/** The channel object the addon returns (native/src/channel.cc). */
export interface AddonChannel extends NativeChannel {
  /** Send the first `length` bytes of the send staging buffer (same contract and return value as send). */
  sendStaged(length: number, fds?: readonly number[]): number;
}

/** What build/Release/vfio_user_native.node exports: NativeBinding with the addon's own openChannel. */
export interface AddonBinding extends Omit<NativeBinding, 'openChannel'> {
  openChannel(
    fd: number,
    options: AddonChannelOptions,
    onMessage: AddonMessageCallback,
    onClose: CloseCallback,
  ): AddonChannel;
}
