/**
 * The control socket's server side: listens next to the device socket and
 * serves the JSON-lines protocol (control-protocol.ts) for one Idio16.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { LogLimiter, silentLogger, type Logger } from 'vfio-user-ts';
import { checkLine, type Idio16 } from './idio16.js';
import { describeError, MAX_CLIENTS, MAX_LINE, MAX_UNREAD, type GpioControlMessage } from './control-protocol.js';

export interface GpioControlOptions {
  log?: Logger | undefined;
  /** File mode of the socket, default 0o600 (only its owner may drive the inputs). */
  mode?: number;
}

/** A listening control socket. */
export interface GpioControlServer {
  readonly path: string;
  /** Stop listening, drop every connection and remove the socket file. Idempotent. */
  close(): Promise<void>;
}

/** Remove `path` if it is a socket nobody listens on; throw EADDRINUSE if someone does. */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch {
    return;
  }
  if (!isSocket) throw Object.assign(new Error(`${path} exists and is not a socket`), { code: 'EEXIST' });
  const alive = await new Promise<boolean>((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw Object.assign(new Error(`${path}: a server is listening there`), { code: 'EADDRINUSE' });
  await unlink(path);
}

/** Validate and carry out one request; returns the reply. `watch` is handled by the caller. */
function handle(gpio: Idio16, request: unknown): GpioControlMessage {
  if (typeof request !== 'object' || request === null || Array.isArray(request)) {
    return { ok: false, error: 'a request is a JSON object' };
  }
  const r = request as Record<string, unknown>;
  const id = r.id;
  const reply = (m: GpioControlMessage): GpioControlMessage => (id === undefined ? m : { ...m, id });
  try {
    switch (r.op) {
      case 'get':
      case 'watch':
        return reply({ ok: true, state: gpio.state() });
      case 'set':
        if ('inputs' in r) {
          if (typeof r.inputs !== 'number') throw new TypeError('inputs must be a number');
          gpio.setInputs(r.inputs);
        } else if ('line' in r) {
          if (typeof r.line !== 'number') throw new TypeError('line must be a number');
          const value = r.value;
          if (value !== 0 && value !== 1 && value !== true && value !== false) {
            throw new TypeError('value must be 0, 1, true or false');
          }
          gpio.setInput(checkLine(r.line), value);
        } else {
          throw new TypeError('set needs "line" and "value", or "inputs"');
        }
        return reply({ ok: true, state: gpio.state() });
      default:
        // JSON.stringify gives undefined for an absent op, whatever its declared type says.
        throw new TypeError(
          `unknown op ${(JSON.stringify(r.op) as string | undefined) ?? 'undefined'} (get, set, watch)`,
        );
    }
  } catch (error) {
    return reply({ ok: false, error: describeError(error) });
  }
}

/** Serve one connection: split lines, answer, subscribe on watch. */
function serveConnection(gpio: Idio16, socket: Socket, limiter: LogLimiter): void {
  const log = limiter.log;
  let buffered = '';
  const unsubscribe: (() => void)[] = [];
  const send = (m: GpioControlMessage): void => {
    if (socket.destroyed || !socket.writable) return;
    if (socket.writableLength > MAX_UNREAD) {
      limiter.warn('control-not-reading', {}, 'gpio control client does not read its events: disconnected');
      socket.destroy();
      return;
    }
    socket.write(`${JSON.stringify(m)}\n`);
  };
  const watch = (): void => {
    if (unsubscribe.length > 0) return;
    const onOutputs = (outputs: number, previous: number): void => send({ event: 'outputs', outputs, previous });
    const onInputs = (inputs: number, previous: number): void => send({ event: 'inputs', inputs, previous });
    const onInterrupt = (): void => send({ event: 'interrupt' });
    const onReset = (): void => send({ event: 'reset' });
    gpio.on('outputs', onOutputs).on('inputs', onInputs).on('interrupt', onInterrupt).on('reset', onReset);
    unsubscribe.push(() => {
      gpio.off('outputs', onOutputs).off('inputs', onInputs).off('interrupt', onInterrupt).off('reset', onReset);
    });
  };
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    for (;;) {
      const newline = buffered.indexOf('\n');
      if (newline < 0) break;
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line === '') continue;
      if (Buffer.byteLength(line) > MAX_LINE) {
        send({ ok: false, error: `request longer than ${MAX_LINE} bytes` });
        socket.end();
        return;
      }
      let request: unknown;
      try {
        request = JSON.parse(line);
      } catch {
        send({ ok: false, error: 'not JSON' });
        continue;
      }
      const reply = handle(gpio, request);
      log.debug({ request, ok: 'ok' in reply ? reply.ok : undefined }, 'gpio control request');
      send(reply);
      if ('ok' in reply && reply.ok && (request as { op?: unknown }).op === 'watch') watch();
    }
    if (Buffer.byteLength(buffered) > MAX_LINE) {
      send({ ok: false, error: `request longer than ${MAX_LINE} bytes` });
      buffered = '';
      socket.end();
    }
  });
  socket.on('error', (error) => log.debug({ err: error }, 'gpio control connection error'));
  socket.on('close', () => {
    for (const off of unsubscribe.splice(0)) off();
  });
}

/**
 * Listen on `path` (a stale socket file there is replaced) and serve the
 * JSON-lines control protocol for `gpio`. For the daemon: call it after the
 * device socket is listening, with `defaultControlPath(socketPath)` unless
 * the config names another path, and close() it on shutdown.
 */
export async function startGpioControl(
  gpio: Idio16,
  path: string,
  options: GpioControlOptions = {},
): Promise<GpioControlServer> {
  const log = (options.log ?? silentLogger).child({ control: path });
  // One budget for every control client: one that reconnects in a loop gets no fresh one.
  const limiter = new LogLimiter(log);
  await removeStaleSocket(path);
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    if (sockets.size >= MAX_CLIENTS) {
      socket.end(`${JSON.stringify({ ok: false, error: 'too many control connections' })}\n`);
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    serveConnection(gpio, socket, limiter);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (error) => limiter.warn('control-socket-error', { err: error }, 'gpio control socket error'));
  await chmod(path, options.mode ?? 0o600);
  log.info('gpio control socket listening');
  let closing: Promise<void> | undefined;
  return {
    path,
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        // server.close unlinks the socket file it created.
        server.close(() => resolve());
      });
      return closing;
    },
  };
}
