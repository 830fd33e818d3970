/**
 * Importing a device module again after its files changed (serve --watch).
 *
 * Node caches ES modules by URL for the life of the process, so a new
 * generation is imported under a new URL: `file:///x/my-device.ts?vfio-user-ts-generation=2`.
 * A resolve hook (registered once, inline as a data: URL so it needs no file
 * of its own in dist/) carries that query on to the module's relative
 * imports outside node_modules (`./regs.js`), so they load afresh too; bare
 * imports (`vfio-user-ts`, packages) keep their one shared copy: both
 * generations must use the same library for the device state and the
 * client's resources to pass between them.
 *
 * Old generations stay in memory: Node never unloads a module. Each reload
 * costs the size of the module's code (not its devices: those are closed).
 */
import { register } from 'node:module';
import { pathToFileURL } from 'node:url';

const QUERY = 'vfio-user-ts-generation';

/**
 * The hook. It also loads a generation of a `.ts` file as an ES module where
 * Node would guess CommonJS (a package without "type": "module"): tsx's ESM
 * loader then compiles it; the first import, without the query, goes the
 * way it always did.
 */
const HOOK = `
const QUERY = ${JSON.stringify(QUERY)};
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  if (!result.url.startsWith('file:')) return result;
  const url = new URL(result.url);
  const relative = /^\\.\\.?\\//.test(specifier);
  if (!relative && !specifier.includes(QUERY) && url.searchParams.has(QUERY)) {
    // A bare import (a tsconfig "paths" alias) resolved with its importer's query: keep one copy.
    url.searchParams.delete(QUERY);
    return { ...result, url: url.href };
  }
  if (url.searchParams.has(QUERY)) {
    return result.format === 'commonjs' && /\\.[cm]?ts$/.test(url.pathname) ? { ...result, format: 'module' } : result;
  }
  const parent = context.parentURL;
  if (!parent || url.pathname.includes('/node_modules/')) return result;
  const from = new URL(parent);
  const generation = from.searchParams.get(QUERY);
  if (generation === null) return result;
  // Where tsx compiles the module as CommonJS (Node 22 and later), its imports arrive here
  // already resolved, as file: URLs: local is then what lies in the importer's folder.
  if (!relative && !url.pathname.startsWith(from.pathname.slice(0, from.pathname.lastIndexOf('/') + 1))) return result;
  url.searchParams.set(QUERY, generation);
  const format = result.format === 'commonjs' && /\\.[cm]?ts$/.test(url.pathname) ? 'module' : result.format;
  return { ...result, url: url.href, format };
}
`;

let registered = false;

/** The URL to import generation `generation` of the module at `path` under (registers the hook once). */
export function generationUrl(path: string, generation: number): string {
  if (!registered) {
    register(`data:text/javascript,${encodeURIComponent(HOOK)}`);
    registered = true;
  }
  const url = pathToFileURL(path);
  url.searchParams.set(QUERY, String(generation));
  return url.href;
}
