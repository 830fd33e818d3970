import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Two projects: fast tests first, then the QEMU guest tests (each boots a real
// Linux guest under TCG: CPU-heavy, so they run after the rest, two at a time).
// A test file that boots QEMU lives under test/guest/ or has "qemu" or "guest"
// in its name, so it lands in the guest project (and its kit provisioning).
const GUEST_TESTS = ['test/guest/**/*.test.ts', 'test/**/*qemu*.test.ts', 'test/**/*guest*.test.ts'];

/**
 * The package's entry points ('vfio-user-ts', 'vfio-user-ts/client', ...), as
 * the built-in devices and examples import them, resolved to the TypeScript
 * sources: each "exports" target ./dist/<path>.js maps to ./<path>.ts. Exact
 * matches only ('vfio-user-ts' must not swallow 'vfio-user-ts/client'). The
 * tests' relative imports reach the same files, so there is one copy of every
 * module (tsconfig.json "paths" does the same for tsc and tsx).
 */
function packageEntryAliases(): { find: RegExp; replacement: string }[] {
  const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8')) as {
    name: string;
    exports: Record<string, string | { default: string }>;
  };
  const aliases: { find: RegExp; replacement: string }[] = [];
  for (const [subpath, target] of Object.entries(pkg.exports)) {
    const file = typeof target === 'string' ? target : target.default;
    const source = /^\.\/dist\/(.+)\.js$/.exec(file);
    if (!source) continue; // ./package.json
    const specifier = pkg.name + subpath.slice(1);
    aliases.push({
      find: new RegExp(`^${specifier.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`),
      replacement: fileURLToPath(new URL(`./${source[1]}.ts`, import.meta.url)),
    });
  }
  return aliases;
}

export default defineConfig({
  resolve: { alias: packageEntryAliases() },
  test: {
    // Native addons and real fds: one process per test file.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 300_000,
    reporters: ['default'],
    // Devices and servers built without a logger log to stderr at LOG_LEVEL (default warn):
    // keep the test output readable unless a run asks for logs.
    env: { LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent' },
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: GUEST_TESTS,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'guest',
          include: GUEST_TESTS,
          // Provisions the QEMU + guest kit once (cached) before the guest tests.
          globalSetup: ['test/guest/global-setup.ts'],
          testTimeout: 180_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
