/**
 * Kernel sandboxes for test files (kernel-sandbox.ts does the work): the run id comes from the global
 * setup, and useSandbox() creates one per test or per file and always cleans it up.
 */
import { afterAll, afterEach, beforeAll, beforeEach, inject } from 'vitest';
import { createKernelSandbox, type Sandbox } from './kernel-sandbox';

export { cgroupPids, type Netns, type Sandbox, type SpawnOptions, type VethPair } from './kernel-sandbox';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Identifies this vitest run; every kernel object a test makes carries it. */
    sluiceRunId: string;
  }
}

export function createSandbox(label: string): Sandbox {
  return createKernelSandbox(label, inject('sluiceRunId'));
}

/** Creates a sandbox before each test (or once for the file) and always cleans it up afterwards. */
export function useSandbox(label: string, scope: 'each' | 'all' = 'each'): () => Sandbox {
  let current: Sandbox | undefined;
  const before = scope === 'each' ? beforeEach : beforeAll;
  const after = scope === 'each' ? afterEach : afterAll;
  before(() => {
    current = createSandbox(label);
  });
  after(async () => {
    await current?.cleanup();
    current = undefined;
  });
  return () => {
    if (!current) throw new Error('sandbox used outside a test');
    return current;
  };
}
