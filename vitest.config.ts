import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Native addons and real fds: one process per test file.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 300_000,
    // Provisions the QEMU + guest kit once (cached) before the guest tests.
    globalSetup: ['test/guest/global-setup.ts'],
    reporters: ['default'],
  },
});
