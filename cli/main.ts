#!/usr/bin/env node
/**
 * The `vfio-user-ts` command (package.json "bin"; `npm start` runs `serve`).
 * Subcommands: serve (serve-command.ts), gpio (gpio-command.ts), vm (../guest-kit/vm-cli.ts),
 * trace (trace-command.ts), inspect (inspect/inspect-command.ts), help.
 */
import { VM_HELP, vmCommand } from '../guest-kit/vm-cli.js';
import { gpioCommand, gpioHelp } from './gpio-command.js';
import { INSPECT_HELP, MAIN_HELP, SERVE_HELP, TRACE_HELP } from './help.js';
import { inspectCommand } from './inspect/inspect-command.js';
import { traceCommand } from './trace-command.js';
import { packageVersion } from './package-root.js';
import { serveCommand } from './serve-command.js';

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serveCommand(rest);
    case 'gpio':
      return gpioCommand(rest);
    case 'vm':
      return vmCommand(rest);
    case 'trace':
      return traceCommand(rest);
    case 'inspect':
      return inspectCommand(rest);
    case undefined:
    case '-h':
    case '--help':
      process.stdout.write(MAIN_HELP);
      return 0;
    case 'help':
      process.stdout.write(
        ({ serve: SERVE_HELP, vm: VM_HELP, trace: TRACE_HELP, inspect: INSPECT_HELP } as Record<string, string>)[
          rest[0] ?? ''
        ] ?? (rest[0] === 'gpio' ? gpioHelp() : MAIN_HELP),
      );
      return 0;
    case '-v':
    case '--version':
      process.stdout.write(`${packageVersion()}\n`);
      return 0;
    default:
      process.stderr.write(`vfio-user-ts: unknown command ${JSON.stringify(command)}\n\n${MAIN_HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`vfio-user-ts: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
