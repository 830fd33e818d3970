/**
 * A problem in the daemon's configuration: where it came from (the config
 * file's path, or "command line"), which field, and what is wrong. The daemon
 * collects all of them before starting anything and prints one per line:
 *
 *     devices.json: devices[1].socket: is required (the UNIX socket path QEMU connects to)
 */
export class ConfigError extends Error {
  constructor(
    /** The config file's path, or "command line". */
    public readonly source: string,
    /** The field, as a path: `devices[1].options.size`, or `--size` for a flag. */
    public readonly field: string,
    /** What is wrong, phrased so the reader knows what to write instead. */
    public readonly problem: string,
  ) {
    super(`${source}: ${field}: ${problem}`);
    this.name = 'ConfigError';
  }
}

/** Thrown with every error found, so none has to be fixed one run at a time. */
export class ConfigErrors extends Error {
  constructor(public readonly errors: readonly ConfigError[]) {
    super(errors.map((e) => e.message).join('\n'));
    this.name = 'ConfigErrors';
  }
}

/** Collects errors for one source while validating. */
export class ErrorSink {
  readonly errors: ConfigError[] = [];
  constructor(public readonly source: string) {}
  add(field: string, problem: string): void {
    this.errors.push(new ConfigError(this.source, field, problem));
  }
}
