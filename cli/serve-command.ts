/**
 * `vfio-user-ts serve`: validate everything, start every device, print how to
 * connect QEMU, and run until SIGTERM/SIGINT; then stop within 5 s.
 */
import type { Logger } from 'pino';
import { createLogger } from '../server/log.js';
import { ConfigErrors } from './config-error.js';
import type { DeviceSpec } from './config.js';
import { Daemon } from './daemon.js';
import { SERVE_HELP } from './help.js';
import { connectHint } from './qemu-hint.js';
import { parseServeArgs, type ServeCommandOptions } from './serve-args.js';
import { formatSize } from './size.js';

/** Whole budget from the first signal to exit. */
const SHUTDOWN_TIMEOUT_MS = 4500;

/** Exit codes of `serve`. */
const ExitCode = { OK: 0, FAILURE: 1, USAGE: 2 } as const;

/** Print config errors, one per line, to stderr. */
function reportConfigErrors(err: ConfigErrors): void {
  for (const e of err.errors) process.stderr.write(`vfio-user-ts: ${e.message}\n`);
  process.stderr.write(
    `vfio-user-ts: nothing was started (${err.errors.length} configuration error${err.errors.length === 1 ? '' : 's'})\n`,
  );
}

/** Runs the command; resolves with the exit code once it is time to exit. */
export async function serveCommand(args: string[]): Promise<number> {
  let options: ServeCommandOptions;
  try {
    options = parseServeArgs(args);
  } catch (err) {
    if (err instanceof ConfigErrors) {
      reportConfigErrors(err);
      return ExitCode.USAGE;
    }
    throw err;
  }
  if (options.help) {
    process.stdout.write(SERVE_HELP);
    return ExitCode.OK;
  }
  const pretty = options.logFormat === 'auto' ? undefined : options.logFormat === 'pretty';
  const log = createLogger({ level: options.logLevel, pretty });

  let daemon: Daemon;
  try {
    daemon = await Daemon.prepare(options.config, log);
  } catch (err) {
    if (err instanceof ConfigErrors) {
      reportConfigErrors(err);
      return ExitCode.USAGE;
    }
    throw err;
  }
  if (options.check) {
    process.stdout.write(`${options.config.source}: configuration OK\n`);
    for (const d of options.config.devices) process.stdout.write(`  ${d.name}: ${d.socket}: ${describeSpec(d)}\n`);
    process.stdout.write(connectHint(options.config.devices.map((d) => ({ name: d.name, socket: d.socket }))));
    return ExitCode.OK;
  }
  return runUntilSignal(daemon, log);
}

function runUntilSignal(daemon: Daemon, log: Logger): Promise<number> {
  return new Promise<number>((resolveExit) => {
    let shuttingDown = false;
    const forceExit = (why: string): void => {
      log.error(why);
      process.stderr.write(`vfio-user-ts: ${why}\n`);
      daemon.removeSocketFilesSync();
      resolveExit(ExitCode.FAILURE);
    };
    const shutdown = (reason: string, code: number): void => {
      if (shuttingDown) {
        forceExit(`${reason} during shutdown: exiting now`);
        return;
      }
      shuttingDown = true;
      log.info({ reason }, 'stopping');
      // Not unref'd: a close() that never settles must still end in this exit.
      const hardTimeout = setTimeout(
        () => forceExit(`shutdown took longer than ${SHUTDOWN_TIMEOUT_MS} ms: exiting anyway`),
        SHUTDOWN_TIMEOUT_MS,
      );
      void daemon.stop().then(() => {
        clearTimeout(hardTimeout);
        log.info('all devices stopped');
        resolveExit(code);
      });
    };
    process.on('SIGTERM', () => shutdown('SIGTERM', ExitCode.OK));
    process.on('SIGINT', () => shutdown('SIGINT', ExitCode.OK));
    // The terminal went away (there is no configuration reload): stop like SIGTERM.
    process.on('SIGHUP', () => shutdown('SIGHUP', ExitCode.OK));
    process.on('uncaughtException', (err) => {
      log.fatal({ err }, 'uncaught exception');
      shutdown('uncaught exception', ExitCode.FAILURE);
    });
    process.on('unhandledRejection', (err) => {
      log.fatal({ err }, 'unhandled promise rejection');
      shutdown('unhandled promise rejection', ExitCode.FAILURE);
    });

    daemon.start().then(
      () => {
        if (shuttingDown) return;
        const devices = daemon.devices.map((d) => ({
          name: d.spec.name,
          socket: d.spec.socket,
          notes: [describeSpec(d.spec, false), ...(d.hosted.notes ?? [])],
        }));
        process.stderr.write(connectHint(devices));
        log.info({ devices: devices.length }, 'ready');
      },
      (err: unknown) => {
        const message = err instanceof Error ? err.message : String(err);
        log.error({ err }, 'start failed');
        process.stderr.write(`vfio-user-ts: ${message}\n`);
        if (shuttingDown) return; // the running shutdown decides the exit
        shuttingDown = true;
        // Stop what did start (its sockets are ours); the hard timeout still applies.
        const hardTimeout = setTimeout(
          () => forceExit(`stopping after the failed start took longer than ${SHUTDOWN_TIMEOUT_MS} ms`),
          SHUTDOWN_TIMEOUT_MS,
        );
        void daemon.stop().then(() => {
          clearTimeout(hardTimeout);
          resolveExit(ExitCode.FAILURE);
        });
      },
    );
  });
}

/** One line about a device's kind and backing. */
function describeSpec(d: DeviceSpec, withControl = true): string {
  switch (d.type) {
    case 'nvme':
      return (
        'nvme, ' +
        d.namespaces
          .map(
            (ns, i) =>
              `namespace ${i + 1}: ${ns.path ?? 'RAM'}${ns.size ? ` (${formatSize(ns.size)})` : ''}, ${ns.lbaSize}-byte blocks`,
          )
          .join('; ')
      );
    case 'gpio':
      return `gpio (ACCES PCI-IDIO-16)${withControl ? `, control socket ${d.control ?? 'none'}` : ''}`;
    case 'module':
      return `device module ${d.module}`;
  }
}
