/**
 * `vfio-user-ts trace FILE`: print a capture (`serve --trace-file FILE`) the
 * way --trace logs a session, one line per message, filtered by command or
 * region; `--json` keeps the chosen records as JSON lines.
 */
import { parseArgs } from 'node:util';
import {
  commandByName,
  formatRecord,
  matches,
  readCapture,
  regionByName,
  type TraceFilter,
  type TraceRecord,
} from '../trace/index.js';
import { TRACE_HELP } from './help.js';

const SPEC = {
  help: { type: 'boolean', short: 'h' },
  command: { type: 'string', multiple: true },
  region: { type: 'string', multiple: true },
  json: { type: 'boolean' },
} as const;

/** 'a,b' given once or more -> ['a', 'b']. */
function list(values: string[] | undefined): string[] {
  return (values ?? []).flatMap((v) => v.split(',')).filter((v) => v.trim() !== '');
}

export async function traceCommand(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: SPEC, allowPositionals: true, strict: true });
  } catch (err) {
    process.stderr.write(`vfio-user-ts trace: ${(err as Error).message}\n\n${TRACE_HELP}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(TRACE_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    process.stderr.write(`vfio-user-ts trace: give one capture file\n\n${TRACE_HELP}`);
    return 2;
  }
  const problems: string[] = [];
  const commands = new Set<string>();
  for (const name of list(values.command)) {
    const cmd = commandByName(name);
    if (cmd === undefined) problems.push(`--command: no command is called ${JSON.stringify(name)}`);
    else commands.add(cmd);
  }
  const regions = new Set<string>();
  for (const name of list(values.region)) {
    const region = regionByName(name);
    if (region === undefined)
      problems.push(`--region: ${JSON.stringify(name)} is no region (config, BAR0..BAR5, ROM, VGA, MIGR, regionN)`);
    else regions.add(region);
  }
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`vfio-user-ts trace: ${p}\n`);
    return 2;
  }
  const filter: TraceFilter = { commands, regions };
  const out: string[] = [];
  const flush = (): void => {
    if (out.length > 0) process.stdout.write(out.join(''));
    out.length = 0;
  };
  let start: number | undefined;
  try {
    for await (const line of readCapture(positionals[0]!)) {
      switch (line.kind) {
        case 'header':
          start = Date.parse(line.header.started);
          if (!values.json)
            out.push(
              `# capture started ${line.header.started}${line.header.writer ? ` by ${line.header.writer}` : ''}\n`,
            );
          break;
        case 'record':
          if (!matches(line.record, filter)) break;
          out.push(
            values.json
              ? `${JSON.stringify(line.record)}\n`
              : `${prefix(line.record, start)}${formatRecord(line.record)}\n`,
          );
          break;
        case 'end':
          if (!values.json)
            out.push(
              `# capture ended early: ${line.end.reason}${line.end.dropped ? `, ${line.end.dropped} records dropped` : ''}\n`,
            );
          break;
        case 'bad':
          process.stderr.write(`vfio-user-ts trace: line ${line.line}: ${line.why}\n`);
          break;
      }
      if (out.length >= 256) flush();
    }
  } catch (err) {
    flush();
    process.stderr.write(`vfio-user-ts trace: ${(err as Error).message}\n`);
    return 1;
  }
  flush();
  return 0;
}

/** '  12.345678 nvme0#1 ': seconds since the capture started, the device and the connection. */
function prefix(r: TraceRecord, start: number | undefined): string {
  const t = typeof r.t === 'number' && start !== undefined && !Number.isNaN(start) ? (r.t - start) / 1000 : 0;
  return `${t.toFixed(3).padStart(10)} ${r.dev ?? '-'}#${r.conn} `;
}
