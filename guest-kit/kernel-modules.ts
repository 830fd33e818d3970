/**
 * The guest kernel's modules, kept as shipped (.ko.xz) and decompressed on first
 * use (busybox insmod does not read .xz). Dependencies come from each module's
 * own `depends=` modinfo string: Debian's package has no modules.dep (depmod
 * runs at install time), so this is the same information depmod would write.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

/** Canonical module name: as the kernel sees it ('-' and '_' are the same). */
export function moduleName(name: string): string {
  return name
    .replace(/\.ko(\.xz|\.zst|\.gz)?$/, '')
    .replace(/.*\//, '')
    .replace(/-/g, '_');
}

/** The `depends=` list in a module's .modinfo strings. */
export function moduleDepends(ko: Uint8Array): string[] {
  const text = Buffer.from(ko.buffer, ko.byteOffset, ko.byteLength).toString('latin1');
  const m = /\0depends=([^\0]*)\0/.exec(text);
  return m?.[1] ? m[1].split(',').map(moduleName) : [];
}

export class KernelModules {
  private index?: Map<string, string>;
  private builtin?: Set<string>;

  /**
   * @param tree   the kernel's module directory (lib/modules/<release>)
   * @param koDir  where decompressed modules are kept
   * @param unxz   command that decompresses stdin to stdout
   */
  constructor(
    readonly tree: string,
    readonly koDir: string,
    readonly unxz: readonly [string, ...string[]],
  ) {}

  private files(): Map<string, string> {
    if (this.index) return this.index;
    const index = new Map<string, string>();
    const walk = (dir: string): void => {
      for (const ent of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, ent.name);
        if (ent.isDirectory()) walk(path);
        else if (/\.ko(\.xz)?$/.test(ent.name)) index.set(moduleName(ent.name), relative(this.tree, path));
      }
    };
    walk(join(this.tree, 'kernel'));
    this.index = index;
    return index;
  }

  private isBuiltin(name: string): boolean {
    if (!this.builtin) {
      const file = join(this.tree, 'modules.builtin');
      this.builtin = new Set(
        existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).map(moduleName) : [],
      );
    }
    return this.builtin.has(name);
  }

  /** Path of the decompressed module, decompressing it (atomically) if needed. */
  decompressed(name: string): string {
    const canonical = moduleName(name);
    const out = join(this.koDir, `${canonical}.ko`);
    if (existsSync(out)) return out;
    const rel = this.files().get(canonical);
    if (!rel) throw new Error(`guest kit: no kernel module ${name}`);
    const src = readFileSync(join(this.tree, rel));
    const data = rel.endsWith('.xz')
      ? execFileSync(this.unxz[0], this.unxz.slice(1), { input: src, maxBuffer: 256 << 20 })
      : src;
    mkdirSync(this.koDir, { recursive: true });
    const tmp = `${out}.${process.pid}.tmp`;
    writeFileSync(tmp, data);
    renameSync(tmp, out);
    return out;
  }

  /** The modules to insmod, dependencies first, for `names` (built-in ones dropped). */
  loadOrder(names: string[]): { name: string; path: string }[] {
    const order: { name: string; path: string }[] = [];
    const seen = new Set<string>();
    const visit = (raw: string, chain: string[]): void => {
      const name = moduleName(raw);
      if (seen.has(name)) return;
      if (chain.includes(name)) throw new Error(`guest kit: module dependency cycle ${[...chain, name].join(' -> ')}`);
      if (this.isBuiltin(name)) {
        seen.add(name);
        return;
      }
      const path = this.decompressed(name);
      for (const dep of moduleDepends(readFileSync(path))) visit(dep, [...chain, name]);
      seen.add(name);
      order.push({ name, path });
    };
    for (const n of names) visit(n, []);
    return order;
  }
}
