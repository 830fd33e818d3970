/**
 * The TypeScript in README.md and docs/ compiles against the package, and the
 * examples the docs quote are the files the tests run.
 *
 *   npx tsx scripts/check-docs.ts               check (part of `npm run lint`)
 *   npx tsx scripts/check-docs.ts --write       copy quoted examples into the docs
 *   npx tsx scripts/check-docs.ts --root DIR    another tree (its tests use one)
 *
 * Every ```ts block in a Markdown file is one of three kinds:
 *  - quoted: the line above the fence is `<!-- include: examples/minimal-device.ts -->`
 *    (or `...ts#name` for the lines between `// #region name` and `// #endregion`).
 *    The block must equal that file; the file itself is type-checked and tested
 *    as part of the project. `--write` brings the block up to date.
 *  - a fragment: the fence says ```ts fragment (a few options, a method call out
 *    of context). Skipped, and counted, so every skip is on purpose.
 *  - anything else is a whole module: it is written to .cache/docs-examples/
 *    and compiled with tsconfig.json's options, 'vfio-user-ts' and
 *    'vfio-user-ts/client' resolving to this checkout, as a user's file would.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import ts from 'typescript';

const { values: args } = parseArgs({ options: { write: { type: 'boolean' }, root: { type: 'string' } } });
const ROOT = resolve(args.root ?? join(dirname(fileURLToPath(import.meta.url)), '..'));
const OUT = join(ROOT, '.cache', 'docs-examples');
/** Where the package's public entry points come from in this checkout (package.json "exports"). */
const ENTRY_POINTS: Record<string, string> = {
  'vfio-user-ts': 'server/index.ts',
  'vfio-user-ts/client': 'client/index.ts',
  'vfio-user-ts/guest-kit': 'guest-kit/index.ts',
};
const TS_LANGUAGES = new Set(['ts', 'typescript']);
const INCLUDE = /^<!--\s*include:\s*(\S+?)\s*-->$/;

interface Block {
  doc: string;
  /** 1-based line of the first code line (the one after the opening fence). */
  line: number;
  /** 0-based indexes of the fences in the doc's lines. */
  open: number;
  close: number;
  fragment: boolean;
  include: string | undefined;
  code: string;
}

function markdownFiles(): string[] {
  const found = ['README.md'];
  const walk = (dir: string): void => {
    if (!existsSync(join(ROOT, dir))) return;
    for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.md')) found.push(path);
    }
  };
  walk('docs');
  walk('examples');
  return found.sort();
}

function tsBlocks(doc: string, lines: string[]): Block[] {
  const blocks: Block[] = [];
  // `at()` for every read: past either end is undefined, which reads as ''.
  const line = (i: number): string => lines.at(i) ?? '';
  for (let i = 0; i < lines.length; i++) {
    const fence = /^(\s*)(`{3,}|~{3,})\s*(\S*)\s*(.*)$/.exec(line(i));
    if (!fence) continue;
    const [, indent = '', marker = '', language = '', rest = ''] = fence;
    let close = i + 1;
    while (close < lines.length && !line(close).trimStart().startsWith(marker)) close++;
    if (TS_LANGUAGES.has(language.toLowerCase())) {
      let above = i - 1;
      while (above >= 0 && line(above).trim() === '') above--;
      const include = above >= 0 ? INCLUDE.exec(line(above).trim())?.[1] : undefined;
      const code = lines
        .slice(i + 1, close)
        .map((l) => (l.startsWith(indent) ? l.slice(indent.length) : l))
        .join('\n');
      blocks.push({ doc, line: i + 2, open: i, close, fragment: /\bfragment\b/.test(rest), include, code });
    }
    i = close;
  }
  return blocks;
}

/** The quoted text: a whole file, or the lines of one `// #region name` in it, dedented. */
function quoted(spec: string): string {
  const hash = spec.indexOf('#');
  const file = hash < 0 ? spec : spec.slice(0, hash);
  const text = readFileSync(join(ROOT, file), 'utf8').replace(/\n$/, '');
  if (hash < 0) return text;
  const region = spec.slice(hash + 1);
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.trim() === `// #region ${region}`);
  const end = lines.findIndex((l, i) => i > start && l.trim().startsWith('// #endregion'));
  if (start < 0 || end < 0) throw new Error(`${file}: no '// #region ${region}' ... '// #endregion'`);
  const body = lines.slice(start + 1, end);
  const indent = Math.min(...body.filter((l) => l.trim() !== '').map((l) => l.length - l.trimStart().length));
  return body.map((l) => l.slice(indent)).join('\n');
}

function compilerOptions(): ts.CompilerOptions {
  const parsed = ts.getParsedCommandLineOfConfigFile(
    join(ROOT, 'tsconfig.json'),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => {
        throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      },
    },
  );
  if (!parsed) throw new Error('tsconfig.json: could not be read');
  const paths: ts.MapLike<string[]> = {};
  for (const [name, file] of Object.entries(ENTRY_POINTS)) paths[name] = [join(ROOT, file)];
  return {
    ...parsed.options,
    noEmit: true,
    declaration: false,
    sourceMap: false,
    // Every block is a module of its own, even one without imports.
    moduleDetection: ts.ModuleDetectionKind.Force,
    paths: { ...paths, ...parsed.options.paths },
  };
}

/** Compiles the whole-module blocks; returns one "doc:line:col: message" per error. */
function typeCheck(blocks: Block[]): string[] {
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
  const byFile = new Map<string, Block>();
  for (const block of blocks) {
    const file = join(OUT, `${block.doc.replaceAll('/', '__').replace(/\.md$/, '')}-L${block.line}.ts`);
    writeFileSync(file, `${block.code}\n`);
    byFile.set(file, block);
  }
  const program = ts.createProgram([...byFile.keys()], compilerOptions());
  const errors: string[] = [];
  for (const d of [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()]) {
    errors.push(`tsconfig.json: TS${d.code}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n  ')}`);
  }
  for (const [file, block] of byFile) {
    const source = program.getSourceFile(file)!;
    for (const d of [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)]) {
      const { line, character } = source.getLineAndCharacterOfPosition(d.start ?? 0);
      const message = ts.flattenDiagnosticMessageText(d.messageText, '\n  ');
      errors.push(`${block.doc}:${block.line + line}:${character + 1}: TS${d.code}: ${message}`);
    }
  }
  return errors;
}

const write = args.write === true;
const problems: string[] = [];
const all: Block[] = [];
for (const doc of markdownFiles()) {
  const lines = readFileSync(join(ROOT, doc), 'utf8').split('\n');
  const blocks = tsBlocks(doc, lines);
  all.push(...blocks);
  // Bottom up, so replacing one block leaves the earlier blocks' line numbers alone.
  let changed = false;
  for (const block of blocks.filter((b) => b.include !== undefined).reverse()) {
    const want = quoted(block.include!);
    if (block.code === want) continue;
    if (write) {
      lines.splice(block.open + 1, block.close - block.open - 1, ...want.split('\n'));
      changed = true;
    } else {
      problems.push(`${doc}:${block.line}: differs from ${block.include} (npm run docs:sync copies it)`);
    }
  }
  if (changed) writeFileSync(join(ROOT, doc), lines.join('\n'));
}

const modules = all.filter((b) => !b.fragment && b.include === undefined);
problems.push(...typeCheck(modules));
for (const problem of problems) console.error(problem);
const files = new Set(all.map((b) => b.doc)).size;
const included = all.filter((b) => b.include !== undefined).length;
const fragments = all.filter((b) => b.fragment);
console.log(
  `docs: ${all.length} TypeScript blocks in ${files} files: ${modules.length} type-checked, ` +
    `${included} quoted from examples/, ${fragments.length} fragments skipped` +
    (fragments.length > 0 ? ` (${fragments.map((b) => `${b.doc}:${b.line}`).join(', ')})` : '') +
    `; ${problems.length} problems`,
);
process.exitCode = problems.length > 0 ? 1 : 0;
