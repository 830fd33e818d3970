/**
 * Time spent inside the controller per command (fetch to completion), for
 * benchmarks: two clock reads per command, so only when asked for
 * (NvmeControllerOptions.timing). Off, the command engine holds no
 * CommandTiming and reads no clock.
 */

export class CommandTiming {
  /** Commands completed since timing was turned on. */
  commands = 0;
  nanoseconds = 0n;

  /** A command starts now: the timestamp to hand to done(). */
  start(): bigint {
    return process.hrtime.bigint();
  }

  /** The command that started at `t0` (start()) finished. */
  done(t0: bigint): void {
    this.commands++;
    this.nanoseconds += process.hrtime.bigint() - t0;
  }

  /** Commands completed and their mean time inside the controller, in microseconds. */
  summary(): { commands: number; meanMicros: number } {
    return {
      commands: this.commands,
      meanMicros: this.commands ? Number(this.nanoseconds / BigInt(this.commands)) / 1000 : 0,
    };
  }
}
