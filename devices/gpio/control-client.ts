/** The control socket's client side (for the CLI, tests and scripts). */
import { createConnection, type Socket } from 'node:net';
import type { Idio16State } from './idio16.js';
import type { GpioControlMessage, GpioControlRequest } from './control-protocol.js';

/** A connection to a control socket (client side). */
export class GpioControlClient {
  private buffered = '';
  private readonly waiting: { resolve: (m: GpioControlMessage) => void; reject: (e: Error) => void }[] = [];
  private closedError: Error | undefined;
  /** Called for every event line (after a watch request). */
  onEvent: (event: Exclude<GpioControlMessage, { ok: boolean }>) => void = () => {};

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.receive(chunk));
    const fail = (error: Error): void => {
      this.closedError ??= error;
      for (const w of this.waiting.splice(0)) w.reject(this.closedError);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('control socket closed')));
  }

  /** Connect to the control socket at `path`. */
  static connect(path: string): Promise<GpioControlClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new GpioControlClient(socket));
      });
    });
  }

  /** Send one request and wait for its reply. Rejects if the reply has ok:false. */
  async request(request: GpioControlRequest): Promise<Idio16State> {
    if (this.closedError) throw this.closedError;
    const reply = new Promise<GpioControlMessage>((resolve, reject) => this.waiting.push({ resolve, reject }));
    this.socket.write(`${JSON.stringify(request)}\n`);
    const m = await reply;
    if ('ok' in m && m.ok) return m.state;
    throw new Error(`gpio control: ${'error' in m ? m.error : 'unexpected reply'}`);
  }

  /** Resolves when the connection ends. */
  closed(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.closed) resolve();
      else this.socket.once('close', () => resolve());
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private receive(chunk: string): void {
    this.buffered += chunk;
    for (;;) {
      const newline = this.buffered.indexOf('\n');
      if (newline < 0) return;
      const line = this.buffered.slice(0, newline);
      this.buffered = this.buffered.slice(newline + 1);
      let m: GpioControlMessage;
      try {
        m = JSON.parse(line) as GpioControlMessage;
      } catch {
        continue;
      }
      if ('event' in m) this.onEvent(m);
      else this.waiting.shift()?.resolve(m);
    }
  }
}

/** Send one request to the control socket at `path` and return the device state from the reply. */
export async function gpioControlRequest(path: string, request: GpioControlRequest): Promise<Idio16State> {
  const client = await GpioControlClient.connect(path);
  try {
    return await client.request(request);
  } finally {
    client.close();
  }
}
