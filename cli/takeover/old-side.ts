/**
 * The running daemon's side of a takeover: it listens on a private control
 * socket (mode 0600); a process started with `serve --takeover` connects and
 * says which devices it keeps. This side quiesces and saves them, sends their
 * listening sockets and states, and waits: "adopted" -> it lets go of them,
 * stops the rest and exits; anything else (a failure message, a hang-up, a
 * timeout) -> it resumes them and serves on. Never both, never neither.
 */
import { chmodSync } from 'node:fs';
import type { Logger } from 'pino';
import { native } from '../../native/index.js';
import { Listener } from '../../server/transport/index.js';
import type { Daemon } from '../daemon.js';
import { closeQuietly, ControlChannel, TAKEOVER_PROTOCOL_VERSION } from './control-channel.js';

/** How long the new process may take to say hello, and to build its devices once it has them. */
const HELLO_TIMEOUT_MS = 5_000;
const ADOPT_TIMEOUT_MS = 30_000;

export class TakeoverService {
  #busy = false;
  #listener: Listener | undefined;

  private constructor(
    private readonly daemon: Daemon,
    private readonly log: Logger,
    private readonly handedOver: () => void,
  ) {}

  /**
   * Listen on `path`; `handedOver` runs once a new process took everything
   * (the daemon is stopped by then: exit). Returns undefined (with a warning)
   * when the socket cannot be made: the daemon serves on, without takeover.
   */
  static async open(
    path: string,
    daemon: Daemon,
    log: Logger,
    handedOver: () => void,
  ): Promise<TakeoverService | undefined> {
    const service = new TakeoverService(daemon, log.child({ takeover: path }), handedOver);
    try {
      service.#listener = await Listener.open(path, (fd) => service.#onAccept(fd), service.log, { backlog: 2 });
      chmodSync(path, 0o600);
    } catch (err) {
      service.#listener?.close();
      log.warn({ err, path }, 'takeover control socket unavailable: this daemon cannot be taken over');
      return undefined;
    }
    return service;
  }

  close(): void {
    this.#listener?.close();
    this.#listener = undefined;
  }

  #onAccept(fd: number): void {
    if (this.#busy) {
      native.closeFd(fd);
      return;
    }
    this.#busy = true;
    void this.#serve(new ControlChannel(fd, this.log)).finally(() => {
      this.#busy = false;
    });
  }

  async #serve(channel: ControlChannel): Promise<void> {
    let hello;
    try {
      hello = await channel.receive(HELLO_TIMEOUT_MS);
    } catch (err) {
      this.log.warn({ err }, 'takeover: no request on the control connection');
      channel.close();
      return;
    }
    for (const f of hello.fds) closeQuietly(f);
    const wanted = hello.json.devices;
    if (hello.json.type !== 'hello' || hello.json.version !== TAKEOVER_PROTOCOL_VERSION || !Array.isArray(wanted)) {
      this.#refuse(channel, `expected a version ${TAKEOVER_PROTOCOL_VERSION} hello`);
      return;
    }
    const kept = new Set<string>();
    for (const w of wanted as unknown[]) {
      const want = w as { name?: unknown; socket?: unknown };
      const d = this.daemon.devices.find((r) => r.spec.name === want.name && r.spec.socket === want.socket);
      if (d) kept.add(d.spec.name);
    }
    this.log.info({ pid: hello.json.pid, kept: [...kept] }, 'takeover requested: handing over the devices kept');
    let carried;
    try {
      carried = await this.daemon.handOver(kept);
    } catch (err) {
      this.#refuse(channel, (err as Error).message);
      return;
    }
    const offer = {
      type: 'offer',
      devices: carried.map((c) => ({
        name: c.name,
        socket: c.socket,
        activated: c.activated,
        stateBytes: c.state.length,
      })),
    };
    let answer;
    try {
      channel.send(
        offer,
        Buffer.concat(carried.map((c) => c.state)),
        carried.map((c) => c.fd),
      );
      answer = await channel.receive(ADOPT_TIMEOUT_MS);
    } catch (err) {
      answer = { json: { type: 'failed', reason: (err as Error).message }, fds: [] };
    } finally {
      for (const c of carried) native.closeFd(c.fd);
    }
    for (const f of answer.fds) closeQuietly(f);
    if (answer.json.type !== 'adopted') {
      await this.daemon.resumeAfterHandOver(kept);
      this.log.error(
        { reason: answer.json.reason ?? answer.json.type },
        'takeover failed in the new process: resumed, serving on',
      );
      channel.close();
      return;
    }
    // Let go: the control socket first (the new process makes its own), then the devices.
    this.close();
    await this.daemon.releaseAfterHandOver(kept);
    try {
      channel.send({ type: 'released' });
    } catch (err) {
      this.log.error({ err }, 'takeover: the new process hung up before the devices were released');
    }
    channel.close();
    this.log.info({ devices: [...kept] }, 'handed over to the new process: exiting');
    this.handedOver();
  }

  #refuse(channel: ControlChannel, reason: string): void {
    this.log.warn({ reason }, 'takeover refused: serving on');
    try {
      channel.send({ type: 'refused', reason });
    } catch {
      // It hung up already.
    }
    channel.close();
  }
}
