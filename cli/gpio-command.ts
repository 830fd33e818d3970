/**
 * `vfio-user-ts gpio get|set|watch`: the GPIO card's control client
 * (devices/gpio/control.ts runGpioCli). Without --control it talks to the
 * built-in default card's control socket (run/gpio0.sock.control).
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { defaultControlPath, GPIO_USAGE, runGpioCli } from '../devices/gpio/control.js';
import { DEFAULT_CONFIG } from './default-config.js';

/** The default card's control socket, relative to the working folder. */
function defaultGpioControl(cwd = process.cwd()): string {
  const gpio = DEFAULT_CONFIG.devices.find((d) => d.type === 'gpio')!;
  return defaultControlPath(resolve(cwd, gpio.socket));
}

/** `vfio-user-ts help gpio`. */
export function gpioHelp(): string {
  return `${GPIO_USAGE}\nWithout --control: ${defaultGpioControl()} (the built-in default card's control socket).\n`;
}

export async function gpioCommand(args: string[]): Promise<number> {
  const argv = [...args];
  const hasControl = argv.some((a) => a === '--control' || a === '-c' || a.startsWith('--control='));
  const wantsHelp = argv.includes('--help') || argv.includes('-h');
  const hasCommand = argv.some((a) => a === 'get' || a === 'set' || a === 'watch');
  if (!hasControl && !wantsHelp && hasCommand) {
    const path = defaultGpioControl();
    if (!existsSync(path)) {
      process.stderr.write(
        `vfio-user-ts gpio: no --control given and ${path} does not exist (is the daemon running?)\n`,
      );
      return 2;
    }
    argv.push('--control', path);
  }
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await runGpioCli(argv, {
      stdout: (t) => process.stdout.write(t),
      stderr: (t) => process.stderr.write(t),
      signal: abort.signal,
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
