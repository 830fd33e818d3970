/**
 * `vfio-user-ts serve`: validate everything, start every device, print how to
 * connect QEMU, and run until SIGTERM/SIGINT; then stop within 5 s.
 *
 * Output: stdout carries only the log (one JSON record per line unless
 * --log-format pretty), so log shippers can read it; the human banner (the
 * QEMU options) and fatal messages go to stderr. Under systemd
 * ($NOTIFY_SOCKET) it reports READY=1 / STOPPING=1 / STATUS=..., and
 * takes the device sockets systemd passes (cli/systemd.ts).
 */
import type { Logger } from 'pino';
import { createLogger } from '../server/log.js';
import { MetricsRegistry, serveMetrics, type MetricsHttpServer } from '../server/metrics/index.js';
import { ConfigErrors } from './config-error.js';
import type { DeviceSpec } from './config.js';
import { Daemon, DeviceStartError } from './daemon.js';
import { SERVE_HELP } from './help.js';
import { connectHint } from './qemu-hint.js';
import { parseServeArgs, type ServeCommandOptions } from './serve-args.js';
import { formatSize } from './size.js';
import { native } from '../native/index.js';
import { CaptureWriter, ProtocolTracer } from '../trace/index.js';
import { packageVersion } from './package-root.js';
import { assignActivatedSockets, SystemdNotifier, takeActivatedSockets } from './systemd.js';
import { controlSocketPath } from './takeover/control-channel.js';
import { requestTakeover, type TakeoverRequest } from './takeover/new-side.js';
import { TakeoverService } from './takeover/old-side.js';

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
  const { config } = options;

  // The sockets systemd passed (taken now: the variables must not outlive this check).
  const activated = options.check ? [] : takeActivatedSockets();
  const { fds: listenFds, unused } = assignActivatedSockets(config.devices, activated);
  const metrics = config.metrics && !options.check ? new MetricsRegistry({ log }) : undefined;

  let capture: CaptureWriter | undefined;
  if (options.traceFile && !options.check) {
    try {
      capture = new CaptureWriter(options.traceFile.path, {
        maxBytes: options.traceFile.maxBytes,
        writer: `vfio-user-ts ${packageVersion()}`,
      });
    } catch (err) {
      process.stderr.write(
        `vfio-user-ts: --trace-file: cannot create ${options.traceFile.path}: ${(err as Error).message}\n`,
      );
      return ExitCode.USAGE;
    }
  }
  const observer = capture && captureObserver(capture, options.traceFile?.rawBytes ?? 0);

  let daemon: Daemon;
  try {
    daemon = await Daemon.prepare(config, log, {
      listenFds,
      watch: options.watch,
      ...(metrics && { metrics }),
      ...(observer && { observer }),
    });
    if (options.check) await daemon.check();
  } catch (err) {
    await capture?.close();
    if (err instanceof ConfigErrors) {
      reportConfigErrors(err);
      return ExitCode.USAGE;
    }
    throw err;
  }
  if (options.check) {
    process.stdout.write(`${config.source}: configuration OK (every device was built, then closed)\n`);
    for (const d of config.devices) process.stdout.write(`  ${d.name}: ${d.socket}: ${describeSpec(d)}\n`);
    if (config.metrics) process.stdout.write(`  metrics: http://${hostPort(config.metrics)}/metrics\n`);
    process.stdout.write(
      connectHint(
        config.devices.map((d) => ({ name: d.name, socket: d.socket })),
        'vfio-user-ts would serve (nothing runs: --check):',
      ),
    );
    return ExitCode.OK;
  }
  // --takeover: ask the running daemon for its devices (config errors stopped us before: it never noticed).
  const controlPath = controlSocketPath(config.devices[0]?.socket);
  let takeover: TakeoverRequest | undefined;
  if (options.takeover) {
    try {
      if (controlPath === undefined) throw new Error('no device, so no control socket to find the running daemon');
      takeover = await requestTakeover(controlPath, config.devices, log);
    } catch (err) {
      const message = `--takeover: ${(err as Error).message}`;
      log.error({ err }, message);
      process.stderr.write(`vfio-user-ts: ${message}\n`);
      await capture?.close();
      return ExitCode.FAILURE;
    }
    daemon.carry(takeover.carried);
  }
  for (const s of unused) {
    log.warn({ fd: s.fd, name: s.name, path: s.path }, 'a socket passed by systemd matches no device: closed');
    try {
      native.closeFd(s.fd);
    } catch {
      // Not ours after all.
    }
  }
  try {
    return await runUntilSignal(daemon, log, metrics, config.metrics, { controlPath, takeover });
  } finally {
    await capture?.close();
  }
}

/** Per device, a tracer that writes every record to the capture. */
function captureObserver(capture: CaptureWriter, rawBytes: number): (device: string) => ProtocolTracer {
  return (device) => new ProtocolTracer((record) => capture.write(record), { dev: device, rawBytes });
}

function hostPort(a: { host: string; port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

function runUntilSignal(
  daemon: Daemon,
  log: Logger,
  metrics: MetricsRegistry | undefined,
  metricsAddress: { host: string; port: number } | undefined,
  upgrade: { controlPath: string | undefined; takeover: TakeoverRequest | undefined },
): Promise<number> {
  const systemd = new SystemdNotifier(log);
  let http: MetricsHttpServer | undefined;
  let control: TakeoverService | undefined;
  const stopAll = async (): Promise<void> => {
    control?.close();
    await Promise.all([daemon.stop(), http?.close()]);
  };
  return new Promise<number>((resolveExit) => {
    let shuttingDown = false;
    /** A new process took every device over (the daemon is stopped): exit. */
    const handedOver = (): void => {
      if (shuttingDown) return;
      shuttingDown = true;
      systemd.notify({ STOPPING: 1, STATUS: 'handed over to a new process' });
      if (http) void http.close().then(() => resolveExit(ExitCode.OK));
      else resolveExit(ExitCode.OK);
    };
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
      systemd.notify({ STOPPING: 1, STATUS: `stopping (${reason})` });
      // Not unref'd: a close() that never settles must still end in this exit.
      const hardTimeout = setTimeout(
        () => forceExit(`shutdown took longer than ${SHUTDOWN_TIMEOUT_MS} ms: exiting anyway`),
        SHUTDOWN_TIMEOUT_MS,
      );
      void stopAll().then(() => {
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

    const start = async (): Promise<void> => {
      if (metrics && metricsAddress) {
        try {
          http = await serveMetrics(metrics, { ...metricsAddress, log });
        } catch (err) {
          throw new Error(`cannot serve metrics on ${hostPort(metricsAddress)}: ${(err as Error).message}`, {
            cause: err,
          });
        }
      }
      await daemon.start();
      if (upgrade.takeover) {
        // Everything is built and loaded: the old process lets go, then we accept.
        await upgrade.takeover.adopted();
        await daemon.finishTakeover();
        log.info('takeover complete: the previous daemon let go of every device');
      }
      if (upgrade.controlPath !== undefined && !shuttingDown)
        control = await TakeoverService.open(upgrade.controlPath, daemon, log, handedOver);
    };
    start().then(
      () => {
        if (shuttingDown) return;
        const devices = daemon.devices.map((d) => ({
          name: d.spec.name,
          socket: d.spec.socket,
          notes: [describeSpec(d.spec, false), ...(d.hosted.notes ?? [])],
        }));
        const lines = connectHint(devices) + (http ? `Metrics (Prometheus): ${http.url}\n` : '');
        process.stderr.write(lines);
        log.info({ devices: devices.length, ...(http && { metrics: http.url }) }, 'ready');
        const names = devices.map((d) => d.name).join(', ');
        systemd.notify({ READY: 1, STATUS: `serving ${devices.length} device(s): ${names}` });
      },
      (err: unknown) => {
        const message = err instanceof Error ? err.message : String(err);
        // The log records the original error once (msg says where it failed);
        // the terminal gets the one-line story.
        if (err instanceof DeviceStartError)
          log.error({ device: err.device, stage: err.stage, err: err.cause }, `device ${err.device}: start failed`);
        else log.error({ err: err instanceof Error && err.cause !== undefined ? err.cause : err }, message);
        process.stderr.write(`vfio-user-ts: ${message}\n`);
        systemd.notify({ STATUS: `failed: ${message}` });
        if (upgrade.takeover) {
          upgrade.takeover.failed(message);
          log.error('takeover abandoned: the running daemon resumes and serves on');
          process.stderr.write('vfio-user-ts: takeover abandoned: the running daemon resumes and serves on\n');
        }
        if (shuttingDown) return; // the running shutdown decides the exit
        shuttingDown = true;
        // Stop what did start (its sockets are ours); the hard timeout still applies.
        const hardTimeout = setTimeout(
          () => forceExit(`stopping after the failed start took longer than ${SHUTDOWN_TIMEOUT_MS} ms`),
          SHUTDOWN_TIMEOUT_MS,
        );
        void stopAll().then(() => {
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
