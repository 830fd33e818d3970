/** `vfio-user-ts gpio get|set|watch --control PATH ...`: the CLI over the control socket. */
import { parseArgs } from 'node:util';
import { checkLine, type Idio16State } from './idio16.js';
import { describeError } from './control-protocol.js';
import { GpioControlClient, gpioControlRequest } from './control-client.js';
import type { GpioControlRequest } from './control-protocol.js';

const hex16 = (n: number): string => `0x${n.toString(16).padStart(4, '0')}`;

/** One line describing a state, as `gpio get` prints it. */
export function formatGpioState(s: Idio16State): string {
  return (
    `outputs=${hex16(s.outputs)} inputs=${hex16(s.inputs)} irq=${s.irqEnabled ? 'enabled' : 'disabled'}` +
    ` pending=${s.irqPending ? 'yes' : 'no'} filters=${s.filtersActive ? 'active' : 'inactive'} interrupts=${s.interrupts}`
  );
}

/** Parse `IIN3=1`, `3=0`, `in15=high`, ... into [line, value]. */
function parseAssignment(text: string): [number, boolean] {
  const m = /^(?:iin|in)?(\d{1,2})=(0|1|low|high|true|false)$/i.exec(text);
  if (!m) throw new Error(`bad assignment "${text}" (expected LINE=VALUE, e.g. IIN3=1; lines 0-15)`);
  return [checkLine(Number(m[1])), /^(1|high|true)$/i.test(m[2]!)];
}

function parseMask(text: string): number {
  const n = /^(0x[0-9a-f]+|0b[01]+|\d+)$/i.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new Error(`bad mask "${text}" (0..0xffff)`);
  return n;
}

/** Usage of the gpio subcommand. */
export const GPIO_USAGE = `usage:
  vfio-user-ts gpio get   --control PATH [--json]
  vfio-user-ts gpio set   --control PATH LINE=VALUE...   (LINE 0-15 or IIN0-IIN15, VALUE 0|1)
  vfio-user-ts gpio set   --control PATH --inputs MASK   (all 16 inputs, e.g. 0xffff)
  vfio-user-ts gpio watch --control PATH [--count N] [--json]
`;

/** Where the CLI writes. */
export interface GpioCliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Aborting ends `watch`. */
  signal?: AbortSignal;
}

/**
 * The `vfio-user-ts gpio ...` subcommand. `argv` is what follows `gpio`
 * (e.g. ['set', '--control', '/run/gpio.sock.control', 'IIN3=1']). Returns the
 * exit code (0 ok, 1 failure, 2 usage). For the daemon's CLI: call it with
 * process.argv after the subcommand and process.exitCode = await runGpioCli(...).
 */
export async function runGpioCli(
  argv: readonly string[],
  io: GpioCliIo = { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) },
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        control: { type: 'string', short: 'c' },
        inputs: { type: 'string' },
        count: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    io.stderr(`${describeError(error)}\n${GPIO_USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (values.help) {
    io.stdout(GPIO_USAGE);
    return 0;
  }
  if (!command || !['get', 'set', 'watch'].includes(command) || !values.control) {
    io.stderr(GPIO_USAGE);
    return 2;
  }
  const path = values.control;
  const print = (s: Idio16State): void => io.stdout(values.json ? `${JSON.stringify(s)}\n` : `${formatGpioState(s)}\n`);
  try {
    if (command === 'get') {
      print(await gpioControlRequest(path, { op: 'get' }));
      return 0;
    }
    if (command === 'set') {
      const requests: GpioControlRequest[] = [];
      if (values.inputs !== undefined) requests.push({ op: 'set', inputs: parseMask(values.inputs) });
      for (const text of rest) {
        const [line, value] = parseAssignment(text);
        requests.push({ op: 'set', line, value: value ? 1 : 0 });
      }
      if (requests.length === 0) {
        io.stderr(GPIO_USAGE);
        return 2;
      }
      const client = await GpioControlClient.connect(path);
      try {
        let state: Idio16State | undefined;
        for (const r of requests) state = await client.request(r);
        print(state!);
      } finally {
        client.close();
      }
      return 0;
    }
    // watch
    const count = values.count === undefined ? Infinity : Number(values.count);
    if (!Number.isInteger(count) && count !== Infinity) throw new Error(`bad --count "${values.count}"`);
    const client = await GpioControlClient.connect(path);
    let seen = 0;
    const onAbort = (): void => client.close();
    io.signal?.addEventListener('abort', onAbort);
    try {
      client.onEvent = (event) => {
        if (event.event !== 'outputs') return;
        io.stdout(
          values.json
            ? `${JSON.stringify(event)}\n`
            : `outputs=${hex16(event.outputs)} previous=${hex16(event.previous)}\n`,
        );
        if (++seen >= count) client.close();
      };
      print(await client.request({ op: 'watch' }));
      if (count > 0) await client.closed();
    } finally {
      io.signal?.removeEventListener('abort', onAbort);
      client.close();
    }
    return 0;
  } catch (error) {
    io.stderr(`vfio-user-ts gpio ${command}: ${describeError(error)}\n`);
    return 1;
  }
}
