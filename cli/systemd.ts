/**
 * systemd integration, without libsystemd (the protocols are small and stable):
 *
 * - Readiness (Type=notify): `READY=1` once every device listens, `STOPPING=1`
 *   when a stop begins, `STATUS=...` lines for `systemctl status`. Sent as
 *   datagrams to $NOTIFY_SOCKET (sd_notify(3)); Node has no datagram UNIX
 *   sockets, so the native addon sends them (native.sdNotify). Without
 *   $NOTIFY_SOCKET nothing is sent.
 * - Socket activation (sd_listen_fds(3)): systemd binds the device sockets
 *   (a .socket unit) and passes them as fds 3, 4, ... with LISTEN_PID,
 *   LISTEN_FDS and LISTEN_FDNAMES. A passed socket belongs to the device
 *   whose name is its FileDescriptorName=, else to the device whose socket
 *   path it is bound to (read from /proc/net/unix).
 */
import { readFileSync, readlinkSync } from 'node:fs';
import type { Logger } from 'pino';
import { native } from '../native/index.js';

/** The first fd systemd passes (SD_LISTEN_FDS_START). */
const LISTEN_FDS_START = 3;

/** Sends sd_notify messages when the service manager asked for them. */
export class SystemdNotifier {
  readonly #socket: string | undefined;
  readonly #log: Logger;
  #warned = false;

  constructor(log: Logger, env: NodeJS.ProcessEnv = process.env) {
    const socket = env.NOTIFY_SOCKET;
    this.#socket = socket !== undefined && socket !== '' ? socket : undefined;
    this.#log = log;
  }

  /** Whether a service manager listens ($NOTIFY_SOCKET is set). */
  get enabled(): boolean {
    return this.#socket !== undefined;
  }

  /** Send `fields` (e.g. { READY: 1, STATUS: 'serving 2 devices' }) as one message. Never throws. */
  notify(fields: Record<string, string | number>): void {
    if (this.#socket === undefined) return;
    // One assignment per line: a newline inside a value would start another.
    const state = Object.entries(fields)
      .map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`)
      .join('\n');
    try {
      native.sdNotify(this.#socket, state);
    } catch (err) {
      // The unit still works without (Type=simple would); say it once.
      if (!this.#warned) this.#log.warn({ err, socket: this.#socket }, 'sd_notify failed');
      this.#warned = true;
    }
  }
}

/** A listening socket systemd passed. */
export interface ActivatedSocket {
  fd: number;
  /** FileDescriptorName= (systemd's default is the socket unit's name). */
  name: string;
  /** The path it is bound to, when /proc tells. */
  path: string | undefined;
}

/**
 * The sockets systemd passed to this process (none unless LISTEN_PID is our
 * pid). Unsets the variables, as sd_listen_fds(1) does, so nothing we start
 * takes them for its own.
 */
export function takeActivatedSockets(env: NodeJS.ProcessEnv = process.env, pid = process.pid): ActivatedSocket[] {
  const listenPid = env.LISTEN_PID;
  const listenFds = env.LISTEN_FDS;
  const names = env.LISTEN_FDNAMES;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (listenPid === undefined || Number(listenPid) !== pid || listenFds === undefined) return [];
  const count = Number(listenFds);
  if (!Number.isInteger(count) || count <= 0) return [];
  const nameList = names?.split(':') ?? [];
  const paths = boundPaths();
  const out: ActivatedSocket[] = [];
  for (let i = 0; i < count; i++) {
    const fd = LISTEN_FDS_START + i;
    out.push({ fd, name: nameList[i] ?? 'unknown', path: paths.get(socketInode(fd) ?? '') });
  }
  return out;
}

/** The inode behind a socket fd ("socket:[12345]"), from /proc/self/fd. */
function socketInode(fd: number): string | undefined {
  try {
    return /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1];
  } catch {
    return undefined;
  }
}

/** inode -> bound path of every UNIX socket with a filesystem path (/proc/net/unix). */
function boundPaths(): Map<string, string> {
  const map = new Map<string, string>();
  let text: string;
  try {
    text = readFileSync('/proc/net/unix', 'utf8');
  } catch {
    return map;
  }
  // Num RefCount Protocol Flags Type St Inode Path
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    const inode = fields[6];
    const path = fields[7];
    if (inode !== undefined && path?.startsWith('/')) map.set(inode, path);
  }
  return map;
}

/**
 * Which passed socket serves which device: by FileDescriptorName= equal to
 * the device's name, else by the bound path equal to its socket path.
 * Returns the fd per device name, and the sockets no device claimed.
 */
export function assignActivatedSockets(
  devices: readonly { name: string; socket: string }[],
  sockets: readonly ActivatedSocket[],
): { fds: Map<string, number>; unused: ActivatedSocket[] } {
  const fds = new Map<string, number>();
  const left = [...sockets];
  const claim = (device: string, match: (s: ActivatedSocket) => boolean): void => {
    if (fds.has(device)) return;
    const i = left.findIndex(match);
    if (i < 0) return;
    fds.set(device, left[i]!.fd);
    left.splice(i, 1);
  };
  for (const d of devices) claim(d.name, (s) => s.name === d.name);
  for (const d of devices) claim(d.name, (s) => s.path === d.socket);
  return { fds, unused: left };
}
