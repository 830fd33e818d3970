/**
 * Finds the Debian archive mirror this machine already uses, from its own apt
 * configuration (deb822 `*.sources` files and one-line `sources.list` files), so
 * the guest kit never hard-codes a host. `VFIO_USER_TS_DEBIAN_MIRROR` overrides it.
 */
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';

/** One apt source entry, reduced to what we need. */
export interface AptSource {
  uri: string;
  suites: string[];
  components: string[];
  /** The keyring apt checks the source with; undefined or absent: none named. */
  signedBy?: string | undefined;
}

/** Parses deb822 `.sources` text (paragraphs of `Key: value`). Only `Types: deb` entries. */
export function parseDeb822Sources(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const paragraph of text.split(/\n\s*\n/)) {
    const fields: Record<string, string> = {};
    let last: string | undefined;
    for (const raw of paragraph.split('\n')) {
      if (raw.startsWith('#')) continue;
      if (/^\s/.test(raw) && last) {
        fields[last] = `${fields[last] ?? ''} ${raw.trim()}`;
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(raw);
      if (m) {
        const [, name = '', value = ''] = m;
        last = name.toLowerCase();
        fields[last] = value.trim();
      }
    }
    if (!fields.types?.split(/\s+/).includes('deb') || !fields.uris) continue;
    if (fields.enabled?.toLowerCase() === 'no') continue;
    for (const uri of fields.uris.split(/\s+/)) {
      out.push({
        uri,
        suites: (fields.suites ?? '').split(/\s+/).filter(Boolean),
        components: (fields.components ?? '').split(/\s+/).filter(Boolean),
        signedBy: fields['signed-by'],
      });
    }
  }
  return out;
}

/** Parses one-line `deb [opts] uri suite comp...` entries. */
export function parseOneLineSources(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    const m = /^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const [, options = '', uri = '', suite = '', components = ''] = m;
    const signedBy = /signed-by=(\S+)/.exec(options)?.[1];
    out.push({ uri, suites: [suite], components: components.split(/\s+/).filter(Boolean), signedBy });
  }
  return out;
}

/** Every enabled `deb` source of the machine. */
function systemAptSources(etcApt = '/etc/apt'): AptSource[] {
  const sources: AptSource[] = [];
  const list = join(etcApt, 'sources.list');
  if (existsSync(list)) sources.push(...parseOneLineSources(readFileSync(list, 'utf8')));
  const dir = join(etcApt, 'sources.list.d');
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).sort()) {
      const text = readFileSync(join(dir, name), 'utf8');
      if (name.endsWith('.sources')) sources.push(...parseDeb822Sources(text));
      else if (name.endsWith('.list')) sources.push(...parseOneLineSources(text));
    }
  }
  return sources;
}

const DEBIAN_SUITE =
  /^(buster|bullseye|bookworm|trixie|forky|sid|stable|testing|unstable|oldstable)(-updates|-backports)?$/;

/**
 * The main Debian archive URI (not the security archive) among the machine's sources:
 * a source with a Debian suite name and component `main`. `VFIO_USER_TS_DEBIAN_MIRROR` in `env` wins.
 */
export function debianMirror(sources?: AptSource[], env: NodeJS.ProcessEnv = process.env): string {
  const override = env.VFIO_USER_TS_DEBIAN_MIRROR;
  if (override) return override.replace(/\/+$/, '');
  sources ??= systemAptSources();
  const hit = sources.find(
    (s) =>
      s.components.includes('main') && s.suites.some((suite) => DEBIAN_SUITE.test(suite)) && !/security/.test(s.uri),
  );
  if (!hit) throw new Error('guest kit: no Debian mirror in /etc/apt (set VFIO_USER_TS_DEBIAN_MIRROR)');
  return hit.uri.replace(/\/+$/, '');
}
