import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Suites load the native addon and spawn processes: keep them out of worker threads.
    pool: 'forks',
    reporters: ['default'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
  },
});
