/** Choosing records from a capture: by command name and by region (`vfio-user-ts trace --command ... --region ...`). */
import { VfioUserCommand } from '../protocol/constants.js';
import type { TraceValue } from './fields.js';
import { regionIndex, regionName } from './names.js';
import type { TraceRecord } from './record.js';

export interface TraceFilter {
  /** Command names (VfioUserCommand's); none: every command. */
  commands?: ReadonlySet<string>;
  /** Region names as regionName() prints them; none: every region. */
  regions?: ReadonlySet<string>;
}

/**
 * 'region_read' -> 'REGION_READ'; 'get_region_info' -> 'DEVICE_GET_REGION_INFO'
 * (the DEVICE_ prefix may be left out). Undefined for a name that is no command.
 */
export function commandByName(name: string): string | undefined {
  const upper = name.trim().toUpperCase().replace(/-/g, '_');
  for (const known of Object.keys(VfioUserCommand)) if (known === upper || known === `DEVICE_${upper}`) return known;
  return undefined;
}

/** 'bar0' -> 'BAR0', 'CONFIG' -> 'config', '7' -> 'config'; undefined for a name that is no region. */
export function regionByName(name: string): string | undefined {
  const index = regionIndex(name);
  return index === undefined ? undefined : regionName(index);
}

/** The regions a record touches: its request's and reply's `region`, and each WRITE_MULTI entry's. */
function regionsOf(r: TraceRecord): string[] {
  if (r.kind === 'state') return [];
  const found: string[] = [];
  const look = (v: TraceValue | undefined): void => {
    if (typeof v === 'string') found.push(v);
  };
  look(r.request.region);
  look(r.reply?.region);
  const entries = r.request.entries;
  if (Array.isArray(entries)) {
    for (const e of entries) if (e !== null && typeof e === 'object' && !Array.isArray(e)) look(e.region);
  }
  return found;
}

/** Whether `r` passes the filter (a state record passes only when nothing is filtered). */
export function matches(r: TraceRecord, filter: TraceFilter): boolean {
  if (filter.commands && filter.commands.size > 0) {
    if (r.kind === 'state' || !filter.commands.has(r.cmd)) return false;
  }
  if (filter.regions && filter.regions.size > 0) {
    const wanted = filter.regions;
    if (!regionsOf(r).some((name) => wanted.has(name))) return false;
  }
  return true;
}
