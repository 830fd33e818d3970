// @ts-check
/**
 * ESLint: typescript-eslint's type-aware rules, plus the layer rules of
 * docs/architecture.md (who may import whom, no import cycles). Formatting is
 * prettier's job (`npm run format`), not ESLint's: no stylistic rules here.
 *
 * The layer rules live here rather than in a second tool (dependency-cruiser)
 * because import-x resolves every import with the same TypeScript resolver the
 * compiler uses, reports in the editor like any other lint error, and needs no
 * second config; dependency-cruiser 18 also no longer runs on Node 20.
 * Cycles are scripts/check-cycles.ts's: import-x/no-cycle skips type-only imports.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { importX } from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

/**
 * The layers, and what each may import besides itself. Imports run one way:
 * cli/ -> devices/ -> server/ -> protocol/ -> native/, client/ -> protocol/ -> native/.
 * A layer may skip layers below it, never import one above it.
 * `PUBLIC` means: only the package's public entry points, by name
 * ('vfio-user-ts', 'vfio-user-ts/client', ...), as a device author outside this repo would.
 */
const PUBLIC = 'public entry points only';
const LAYERS = {
  native: [],
  protocol: ['native'],
  // The protocol trace: decoders of every message, trace records, capture files.
  trace: ['protocol'],
  server: ['trace', 'protocol', 'native'],
  client: ['protocol', 'native'],
  devices: PUBLIC,
  examples: PUBLIC,
  // The guest kit (QEMU + kernel + busybox) is a tool beside the library: it logs through server/'s logger.
  'guest-kit': ['server'],
  // The CLI serves devices, boots guests (`vm`) and, with `inspect`, talks to a device as a client.
  cli: ['devices', 'server', 'client', 'trace', 'protocol', 'native', 'guest-kit'],
  // Tests and benchmarks may reach anything; nothing else may reach them.
  test: ['native', 'protocol', 'trace', 'server', 'client', 'devices', 'examples', 'guest-kit', 'cli', 'bench'],
  bench: ['native', 'protocol', 'trace', 'server', 'client', 'devices', 'examples', 'guest-kit', 'cli', 'test'],
  // The lint scripts stand apart: they read files, they import none of ours.
  scripts: [],
};
/**
 * The files behind the public entry points, by layer, from package.json "exports"
 * (each target ./dist/<layer>/<path>.js is built from ./<layer>/<path>.ts):
 * server: ['./index.ts'], client: ['./index.ts'], devices: ['./nvme/index.ts', './gpio/index.ts'].
 */
const ENTRY_POINTS = (() => {
  const pkg = JSON.parse(readFileSync(join(import.meta.dirname, 'package.json'), 'utf8'));
  /** @type {Record<string, string[]>} */
  const byLayer = {};
  for (const target of Object.values(pkg.exports)) {
    const source = /^\.\/dist\/([^/]+)\/(.+)\.js$/.exec(typeof target === 'string' ? target : target.default);
    if (source) (byLayer[source[1]] ??= []).push(`./${source[2]}.ts`);
  }
  return byLayer;
})();
/** The built-in devices, one folder each: none may import another (each stands alone, as a third party's would). */
const DEVICE_FOLDERS = readdirSync(join(import.meta.dirname, 'devices'), { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name);

/** import-x/no-restricted-paths zones: for each layer, every other layer it may not import. */
function layerZones() {
  const zones = [];
  for (const [layer, allowed] of Object.entries(LAYERS)) {
    for (const other of Object.keys(LAYERS)) {
      if (other === layer) continue;
      const entries = ENTRY_POINTS[other];
      if (allowed === PUBLIC && entries) {
        zones.push({
          target: `./${layer}`,
          from: `./${other}`,
          except: entries,
          message: `${layer}/ uses the public API only: import from 'vfio-user-ts' (or '/client', '/nvme', '/gpio').`,
        });
      } else if (allowed === PUBLIC || !allowed.includes(other)) {
        zones.push({
          target: `./${layer}`,
          from: `./${other}`,
          message: `layers: ${layer}/ may not import ${other}/ (docs/architecture.md).`,
        });
      }
    }
  }
  for (const device of DEVICE_FOLDERS) {
    for (const other of DEVICE_FOLDERS) {
      if (other === device) continue;
      zones.push({
        target: `./devices/${device}`,
        from: `./devices/${other}`,
        message: `devices/${device}/ may not import devices/${other}/: each device stands on the public API alone.`,
      });
    }
  }
  return zones;
}

/**
 * The resolved-path zones above let devices/ reach server/index.ts; this makes
 * them name the package instead of walking there by a relative path.
 */
const publicApiOnly = {
  'no-restricted-imports': [
    'error',
    {
      patterns: [
        {
          regex: String.raw`^(\.\./)+(native|protocol|trace|server|client|devices|cli|guest-kit|test|bench|examples)(/|$)`,
          message:
            "Use the public API: import from 'vfio-user-ts' (or '/client', '/nvme', '/gpio'), as a device author would.",
        },
      ],
    },
  ],
};

/** Where this code base departs from typescript-eslint's strict-type-checked preset, and why. */
const typeScriptChoices = {
  // Numbers and bigints in messages (`region ${index}`) are what the error texts are made of.
  '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
  // With noUncheckedIndexedAccess every typed-array read is `number | undefined`; the codecs check
  // lengths first and `buf[i]!` records that. no-unnecessary-type-assertion still flags a `!` that is not needed.
  '@typescript-eslint/no-non-null-assertion': 'off',
  // `(x) => void promise` and `() => doSomething()` as callbacks are idiomatic, and so is `return fail(why)` as an
  // early exit from a function that itself returns void; a void value used anywhere else is still flagged.
  '@typescript-eslint/no-confusing-void-expression': [
    'error',
    { ignoreArrowShorthand: true, ignoreVoidReturningFunctions: true },
  ],
  // `async` marks a function that implements a Promise-returning contract (Endpoint.dmaMap, NvmeDma.read, a BAR
  // handler): every throw becomes a rejection, even with no await in the body (and the tests' fakes of those
  // contracts are such functions). A promise nobody awaits is still caught, by no-floating-promises and
  // no-misused-promises.
  '@typescript-eslint/require-await': 'off',
  // `const { a: _a, ...rest } = row` is how an object drops a key.
  '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true }],
  // `let device; ...closures that read device...; device = new PciDevice(...)`: two objects that refer to each
  // other (a device and its model, a PciDevice and its BAR handlers). A const would be in its temporal dead
  // zone if a closure ran before the assignment; a variable never read before its one assignment is still flagged.
  'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
  // Passing a caught error (typed unknown) on as a rejection, unchanged, is how errors travel; rejecting with a
  // value known not to be an Error is still flagged.
  '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
  // Beyond the preset. A switch over a protocol enum or a state must name every case.
  '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
  // `count || 4` turns a legitimate 0 (offset, length, vector) into the default; `??` does not. An empty string,
  // though, means "not given" (an empty environment variable, an empty stderr): `a || b` on strings is deliberate.
  '@typescript-eslint/prefer-nullish-coalescing': ['error', { ignorePrimitives: { string: true } }],
  '@typescript-eslint/prefer-optional-chain': 'error',
  eqeqeq: ['error', 'smart'],
};

/** The library logs through pino, one child logger per device and connection: never the console. */
const noConsole = { 'no-console': 'error' };

export default tseslint.config(
  {
    ignores: ['dist/', 'build/', 'node_modules/', '.cache/', 'data/', 'run/', 'coverage/'],
  },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    plugins: { 'import-x': importX },
    settings: {
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })],
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      'import-x/no-restricted-paths': ['error', { basePath: import.meta.dirname, zones: layerZones() }],
      'import-x/no-self-import': 'error',
      'import-x/no-useless-path-segments': 'error',
      'import-x/no-duplicates': 'error',
      ...typeScriptChoices,
    },
  },
  { files: ['devices/**', 'examples/**'], rules: publicApiOnly },
  { files: ['native/**', 'protocol/**', 'server/**', 'client/**', 'devices/**', 'cli/**'], rules: noConsole },
  {
    // Config files in plain JavaScript: no type information to lint with.
    files: ['**/*.js'],
    ...tseslint.configs.disableTypeChecked,
  },
);
