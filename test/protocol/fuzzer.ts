/**
 * A seeded protocol fuzzer: random and mutated vfio-user messages (with fds
 * now and then) over many connections to a running server. Used by
 * fuzz.test.ts (fixed seed, bounded) and fuzz-cli.ts (`npm run fuzz`).
 *
 * Each connection sends batches of hostile messages without waiting, then a
 * GET_INFO whose reply proves the stream is still in sync. Messages that
 * cannot be re-framed (a lying size, random bytes) end their connection.
 */
import { native } from '../../native/index.js';
import {
  VfioUserCommand,
  DmaMapFlag,
  HEADER_SIZE,
  HeaderFlag,
  IrqSetFlag,
  PciRegion,
} from '../../protocol/constants.js';
import { VfioUserClient, type ClientOptions } from '../../client/index.js';
import type { Logger } from '../../server/log.js';
import { mulberry32 } from '../helpers/random.js';

/** Seeded randomness for the fuzzer (mulberry32: small, fast, good enough for fuzzing, reproducible from a seed). */
class Rng {
  /** The next unsigned 32-bit value. */
  readonly u32: () => number;
  constructor(seed: number) {
    this.u32 = mulberry32(seed);
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return this.u32() % n;
  }
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

const INTERESTING_32 = [
  0, 1, 2, 4, 7, 8, 9, 15, 16, 20, 24, 31, 32, 33, 0xff, 0x100, 0x1000, 0xffff, 0x10000, 0x100000, 0x100001, 0x7fffffff,
  0x80000000, 0xfffffffe, 0xffffffff,
];
const INTERESTING_64 = [
  0n,
  1n,
  0x1000n,
  0xfffn,
  0x100000n,
  1n << 32n,
  1n << 43n,
  1n << 63n,
  0xfffffffffffff000n,
  0xffffffffffffffffn,
];

interface Fuzzed {
  bytes: Uint8Array;
  /** fds to attach: 'eventfd' | 'memfd' kinds, created at send time and closed after. */
  fds: Array<'eventfd' | 'memfd'>;
  /** The stream cannot be re-framed after this message: end the connection. */
  terminal: boolean;
}

function le(parts: Array<[4 | 8, number | bigint]>): Uint8Array {
  const n = parts.reduce((s, [w]) => s + w, 0);
  const b = new Uint8Array(n);
  const dv = new DataView(b.buffer);
  let at = 0;
  for (const [w, v] of parts) {
    if (w === 4) dv.setUint32(at, Number(v) >>> 0, true);
    else dv.setBigUint64(at, BigInt(v), true);
    at += w;
  }
  return b;
}

/** A plausible payload for `command` (the template mutations start from). */
function template(rng: Rng, command: number): { payload: Uint8Array; fds: Array<'eventfd' | 'memfd'> } {
  const region = rng.chance(0.8) ? rng.pick([0, 2, PciRegion.CONFIG]) : rng.int(12);
  switch (command) {
    case VfioUserCommand.VERSION: {
      const json = new TextEncoder().encode(
        rng.pick([
          '{"capabilities":{"max_msg_fds":8}}',
          '{}',
          '{"capabilities":{"max_data_xfer_size":4096,"pgsizes":4096}}',
        ]) + '\0',
      );
      const p = new Uint8Array(4 + json.byteLength);
      p.set(json, 4);
      return { payload: p, fds: [] };
    }
    case VfioUserCommand.DMA_MAP: {
      const withFd = rng.chance(0.3);
      const addr = BigInt(rng.int(64)) * 0x1000n;
      return {
        payload: le([
          [4, 32],
          [4, DmaMapFlag.READ | DmaMapFlag.WRITE],
          [8, 0],
          [8, addr],
          [8, BigInt(1 + rng.int(4)) * 0x1000n],
        ]),
        fds: withFd ? ['memfd'] : [],
      };
    }
    case VfioUserCommand.DMA_UNMAP:
      return {
        payload: le([
          [4, 24],
          [4, rng.chance(0.1) ? 2 : 0],
          [8, BigInt(rng.int(64)) * 0x1000n],
          [8, 0x1000],
        ]),
        fds: [],
      };
    case VfioUserCommand.DEVICE_GET_INFO:
      return {
        payload: le([
          [4, 16],
          [4, 0],
          [4, 0],
          [4, 0],
        ]),
        fds: [],
      };
    case VfioUserCommand.DEVICE_GET_REGION_INFO:
      return {
        payload: le([
          [4, rng.pick([32, 64, 256])],
          [4, 0],
          [4, region],
          [4, 0],
          [8, 0],
          [8, 0],
        ]),
        fds: [],
      };
    case VfioUserCommand.DEVICE_GET_REGION_IO_FDS:
      return {
        payload: le([
          [4, 4096],
          [4, 0],
          [4, region],
          [4, 0],
        ]),
        fds: [],
      };
    case VfioUserCommand.DEVICE_GET_IRQ_INFO:
      return {
        payload: le([
          [4, 16],
          [4, 0],
          [4, rng.int(6)],
          [4, 0],
        ]),
        fds: [],
      };
    case VfioUserCommand.DEVICE_SET_IRQS: {
      const evt = rng.chance(0.4);
      const count = rng.int(4);
      const flags = evt
        ? IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER
        : rng.pick([0x21, 0x09, 0x11, 0x22, 0x24, 0x14]);
      const head = le([
        [4, 20],
        [4, flags],
        [4, rng.int(5)],
        [4, rng.int(4)],
        [4, count],
      ]);
      const bools = flags & IrqSetFlag.DATA_BOOL ? rng.bytes(count).map((x) => x & 1) : new Uint8Array(0);
      const p = new Uint8Array(head.byteLength + bools.byteLength);
      p.set(head);
      p.set(bools, head.byteLength);
      return { payload: p, fds: evt ? Array.from({ length: count }, () => 'eventfd' as const) : [] };
    }
    case VfioUserCommand.REGION_READ:
      return {
        payload: le([
          [8, rng.int(0x1000)],
          [4, region],
          [4, rng.pick([1, 2, 4, 8, 16, 256])],
        ]),
        fds: [],
      };
    case VfioUserCommand.REGION_WRITE: {
      const count = rng.pick([1, 2, 4, 8]);
      const head = le([
        [8, rng.int(0x1000) & ~0x7],
        [4, region],
        [4, count],
      ]);
      const p = new Uint8Array(16 + count);
      p.set(head);
      p.set(rng.bytes(count), 16);
      return { payload: p, fds: [] };
    }
    case VfioUserCommand.DEVICE_RESET:
      return { payload: new Uint8Array(0), fds: [] };
    case VfioUserCommand.REGION_WRITE_MULTI:
      return {
        payload: le([
          [8, 1],
          [8, 0],
          [4, region],
          [4, 4],
          [8, 0],
        ]),
        fds: [],
      };
    case VfioUserCommand.DEVICE_FEATURE:
      return {
        payload: le([
          [4, 16],
          [4, rng.int(9) | (1 << (16 + rng.int(3)))],
          [8, 0],
        ]),
        fds: [],
      };
    default:
      return { payload: rng.bytes(rng.int(40)), fds: [] };
  }
}

/** Commands the fuzzer aims at (weighted toward the hot and the complex ones). */
const COMMANDS = [
  VfioUserCommand.DMA_MAP,
  VfioUserCommand.DMA_UNMAP,
  VfioUserCommand.DEVICE_GET_INFO,
  VfioUserCommand.DEVICE_GET_REGION_INFO,
  VfioUserCommand.DEVICE_GET_REGION_IO_FDS,
  VfioUserCommand.DEVICE_GET_IRQ_INFO,
  VfioUserCommand.DEVICE_SET_IRQS,
  VfioUserCommand.DEVICE_SET_IRQS,
  VfioUserCommand.REGION_READ,
  VfioUserCommand.REGION_READ,
  VfioUserCommand.REGION_WRITE,
  VfioUserCommand.REGION_WRITE,
  VfioUserCommand.DEVICE_RESET,
  VfioUserCommand.REGION_WRITE_MULTI,
  VfioUserCommand.DEVICE_FEATURE,
  VfioUserCommand.VERSION,
  VfioUserCommand.DMA_READ,
  VfioUserCommand.DMA_WRITE,
  VfioUserCommand.DIRTY_PAGES,
  VfioUserCommand.MIG_DATA_READ,
  0,
  19,
  0xffff,
];

function mutate(rng: Rng, payload: Uint8Array): Uint8Array {
  let p = payload;
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    switch (rng.int(7)) {
      case 0: // flip a bit
        if (p.byteLength) p[rng.int(p.byteLength)]! ^= 1 << rng.int(8);
        break;
      case 1: // an interesting u32
        if (p.byteLength >= 4)
          new DataView(p.buffer, p.byteOffset).setUint32(
            rng.int(p.byteLength - 3) & ~3,
            rng.pick(INTERESTING_32),
            true,
          );
        break;
      case 2: // an interesting u64
        if (p.byteLength >= 8)
          new DataView(p.buffer, p.byteOffset).setBigUint64(
            rng.int(p.byteLength - 7) & ~7,
            rng.pick(INTERESTING_64),
            true,
          );
        break;
      case 3: // truncate
        p = p.slice(0, rng.int(p.byteLength + 1));
        break;
      case 4: {
        // extend
        const q = new Uint8Array(p.byteLength + 1 + rng.int(64));
        q.set(p);
        q.set(rng.bytes(q.byteLength - p.byteLength), p.byteLength);
        p = q;
        break;
      }
      case 5: // random byte
        if (p.byteLength) p[rng.int(p.byteLength)] = rng.u32() & 0xff;
        break;
      default: // leave it
        break;
    }
  }
  return p;
}

/** One hostile message. */
function fuzzMessage(rng: Rng, forceCommand?: number): Fuzzed {
  const roll = rng.int(100);
  if (roll < 1 && forceCommand === undefined) {
    // random bytes: the stream is gone after this
    return { bytes: rng.bytes(1 + rng.int(200)), fds: [], terminal: true };
  }
  const command = forceCommand ?? rng.pick(COMMANDS);
  const t = template(rng, command);
  const payload = roll < 25 ? t.payload : mutate(rng, t.payload);
  let flags: number = HeaderFlag.TYPE_COMMAND;
  if (rng.chance(0.1)) flags |= HeaderFlag.NO_REPLY;
  if (rng.chance(0.03))
    flags = rng.pick([HeaderFlag.TYPE_REPLY, HeaderFlag.TYPE_REPLY | HeaderFlag.ERROR, 2, 0xf, rng.u32()]);
  const bytes = new Uint8Array(HEADER_SIZE + payload.byteLength);
  const dv = new DataView(bytes.buffer);
  // ids >= 0x8000: never collide with the client's own (sync) requests
  dv.setUint16(0, 0x8000 | rng.int(0x8000), true);
  dv.setUint16(2, command, true);
  let terminal = false;
  let size = bytes.byteLength;
  if (rng.chance(0.005)) {
    size = rng.pick([0, 1, 8, 15, size + 1 + rng.int(100), 0x7fffffff, 0xffffffff]);
    terminal = true;
  }
  dv.setUint32(4, size, true);
  dv.setUint32(8, flags, true);
  dv.setUint32(12, rng.chance(0.05) ? rng.u32() : 0, true);
  bytes.set(payload, HEADER_SIZE);
  let fds = t.fds;
  if (rng.chance(0.03)) fds = [...fds, rng.pick(['eventfd', 'memfd'] as const)];
  if (rng.chance(0.005)) fds = Array.from({ length: 17 + rng.int(4) }, () => 'eventfd' as const);
  return { bytes, fds, terminal };
}

export interface FuzzOptions {
  socketPath: string;
  messages: number;
  seed: number;
  /** Hostile messages between two sync requests (default 24). */
  batch?: number | undefined;
  log?: Logger | undefined;
  /** Resolves when the server has let go of the previous client (later clients queue or are turned away). */
  idle?: () => Promise<void>;
  /** Called every ~1000 messages. */
  onProgress?: (stats: FuzzStats) => void;
}

export interface FuzzStats {
  messages: number;
  connections: number;
  /** Connections the server ended (or that we ended after an unframeable message). */
  dropped: number;
  /** Error replies and successful replies to hostile messages. */
  errorReplies: number;
  okReplies: number;
  syncs: number;
  /** Replies to messages that carried NO_REPLY (must stay 0). */
  noReplyAnswered: number;
}

function makeFd(kind: 'eventfd' | 'memfd'): number {
  return kind === 'eventfd' ? native.eventfd(0) : native.memfdCreate('fuzz', 0x4000);
}

/** Connect; a connection turned away because the previous client is still attached is retried. */
async function connectRetrying(socketPath: string, options: ClientOptions): Promise<VfioUserClient> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await VfioUserClient.connect(socketPath, options);
    } catch (err) {
      if (attempt >= 100 || (err as { errno?: number }).errno !== 104) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/**
 * Run the fuzzer. Rejects if the server stops answering (a sync request on a
 * live connection times out) or a connection cannot be made.
 */
export async function runFuzz(o: FuzzOptions): Promise<FuzzStats> {
  const rng = new Rng(o.seed);
  const batch = o.batch ?? 24;
  const stats: FuzzStats = {
    messages: 0,
    connections: 0,
    dropped: 0,
    errorReplies: 0,
    okReplies: 0,
    syncs: 0,
    noReplyAnswered: 0,
  };
  let nextProgress = 1000;
  while (stats.messages < o.messages) {
    const preVersion = rng.chance(0.05);
    const options: ClientOptions = { timeoutMs: 5000, skipNegotiation: preVersion, log: o.log };
    if (rng.chance(0.2))
      options.capabilities = { maxMsgFds: rng.pick([0, 1, 4, 16]), maxDataXferSize: rng.pick([4096, 65536, 1 << 20]) };
    await o.idle?.();
    const client = await connectRetrying(o.socketPath, options);
    stats.connections++;
    try {
      const perConn = 1 + rng.int(batch * 8);
      const noReply = new Set<number>();
      let sent = 0;
      let alive = true;
      // (The loop leaves by `break` when the connection dies.)
      while (sent < perConn && stats.messages < o.messages) {
        let terminal = false;
        for (let i = 0; i < batch && sent < perConn && stats.messages < o.messages; i++) {
          const m = fuzzMessage(rng, preVersion && rng.chance(0.8) ? VfioUserCommand.VERSION : undefined);
          if (m.bytes.byteLength >= HEADER_SIZE) {
            // unique per connection (>= 0x8000: never the client's own ids), so replies can be told apart
            const id = 0x8000 | (sent & 0x7fff);
            new DataView(m.bytes.buffer, m.bytes.byteOffset).setUint16(0, id, true);
            if (
              !m.terminal &&
              new DataView(m.bytes.buffer, m.bytes.byteOffset).getUint32(8, true) & HeaderFlag.NO_REPLY
            )
              noReply.add(id);
          }
          const fds = m.fds.map(makeFd);
          try {
            await client.sendRaw(m.bytes, fds, { expectId: null });
          } catch {
            alive = false;
          } finally {
            for (const fd of fds) native.closeFd(fd);
          }
          stats.messages++;
          sent++;
          if (m.terminal || preVersion) {
            terminal = true;
            break;
          }
          if (client.isClosed) {
            alive = false;
            break;
          }
        }
        if (stats.messages >= nextProgress) {
          nextProgress += 1000;
          o.onProgress?.(stats);
        }
        if (terminal || !alive) break;
        // Sync: a valid GET_INFO must come back (unless the server hung up).
        try {
          await client.getDeviceInfo();
          stats.syncs++;
        } catch (err) {
          const errno = (err as { errno?: number }).errno;
          if (client.isClosed) break;
          // EINVAL is possible when a fuzzed message was a truncated-but-framed prefix; any reply proves sync.
          if (errno === 110)
            throw new Error(
              `server stopped answering on connection ${stats.connections} after ${stats.messages} messages`,
              { cause: err },
            );
        }
      }
      for (const h of client.strays) {
        if (noReply.has(h.id)) stats.noReplyAnswered++;
        if (h.flags & HeaderFlag.ERROR) stats.errorReplies++;
        else stats.okReplies++;
      }
      if (client.isClosed) stats.dropped++;
    } finally {
      client.close();
    }
  }
  return stats;
}
