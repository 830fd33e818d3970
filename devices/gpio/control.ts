/**
 * The GPIO control socket, for a person running the daemon: JSON lines over a
 * UNIX socket next to the device socket (`<socket>.control`), and the client
 * behind `vfio-user-ts gpio get|set|watch --control PATH`. This file is the
 * daemon's entry point:
 *
 * - `startGpioControl(gpio, path, { log })` when the device starts, `close()` on shutdown;
 * - `defaultControlPath(deviceSocketPath)` for the default path;
 * - `runGpioCli(argv, io)` for the `gpio` subcommand (argv after `gpio`; returns the exit code);
 * - `GPIO_USAGE` for its help.
 *
 * Protocol in control-protocol.ts and docs/gpio.md.
 */
export * from './control-protocol.js';
export { startGpioControl, type GpioControlOptions, type GpioControlServer } from './control-server.js';
export { GpioControlClient, gpioControlRequest } from './control-client.js';
export { runGpioCli, formatGpioState, GPIO_USAGE, type GpioCliIo } from './control-cli.js';
