import { defineConfig } from 'vitest/config';

// Two projects: fast tests first, then the QEMU guest tests (each boots a real
// Linux guest under TCG: CPU-heavy, so they run after the rest, two at a time).
// A test file that boots QEMU lives under test/guest/ or has "qemu" or "guest"
// in its name, so it lands in the guest project (and its kit provisioning).
const GUEST_TESTS = ['test/guest/**/*.test.ts', 'test/**/*qemu*.test.ts', 'test/**/*guest*.test.ts'];

export default defineConfig({
  test: {
    // Native addons and real fds: one process per test file.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 300_000,
    reporters: ['default'],
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
