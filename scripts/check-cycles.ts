/**
 * No import cycles between our files, type-only imports included.
 *
 *   npx tsx scripts/check-cycles.ts [--root DIR]
 *
 * ESLint's import-x/no-cycle skips `import type`, since erased imports cannot
 * cycle at run time; but a type-only circle still ties two files into one (the
 * native/index.ts <-> channel-windows.ts circle was one), so this check counts
 * them. Imports are resolved by the compiler with tsconfig.json's own options,
 * so what this sees is what tsc sees. Exit code 1 and one line per cycle when
 * there is any.
 */
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import ts from 'typescript';

const { values: args } = parseArgs({ options: { root: { type: 'string' } } });
const ROOT = resolve(args.root ?? join(dirname(fileURLToPath(import.meta.url)), '..'));

type Graph = Map<string, Set<string>>;

function loadProject(): ts.ParsedCommandLine {
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
  return parsed;
}

/** Every module specifier in a file: imports, re-exports, import() and import-equals. */
function specifiers(source: ts.SourceFile): string[] {
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier) {
      if (ts.isStringLiteral(node.moduleSpecifier)) found.push(node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const arg = node.arguments.at(0);
      if (arg && ts.isStringLiteralLike(arg)) found.push(arg.text);
    } else if (
      ts.isImportTypeNode(node) &&
      ts.isLiteralTypeNode(node.argument) &&
      ts.isStringLiteral(node.argument.literal)
    ) {
      found.push(node.argument.literal.text);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      const ref = node.moduleReference.expression;
      if (ts.isStringLiteral(ref)) found.push(ref.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

function importGraph(project: ts.ParsedCommandLine): Graph {
  const host = ts.createCompilerHost(project.options);
  const graph: Graph = new Map();
  for (const file of project.fileNames) {
    const text = ts.sys.readFile(file);
    if (text === undefined) throw new Error(`${file}: cannot be read`);
    const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
    const targets = new Set<string>();
    for (const spec of specifiers(source)) {
      const resolved = ts.resolveModuleName(spec, file, project.options, host).resolvedModule;
      if (resolved && !resolved.isExternalLibraryImport) targets.add(relative(ROOT, resolved.resolvedFileName));
    }
    graph.set(relative(ROOT, file), targets);
  }
  return graph;
}

/** Strongly connected components with more than one file, or a file importing itself (Tarjan). */
function cycles(graph: Graph): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    let w: string | undefined;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1 || graph.get(v)?.has(v)) found.push(component.sort());
  };
  for (const v of graph.keys()) if (!index.has(v)) connect(v);
  return found;
}

const graph = importGraph(loadProject());
const found = cycles(graph);
for (const component of found) console.error(`import cycle: ${component.join(' <-> ')}`);
console.log(`cycles: ${found.length} among ${graph.size} files (type-only imports included)`);
process.exitCode = found.length > 0 ? 1 : 0;
