import type { TestProject } from 'vitest/node' with { 'resolution-mode': 'import' };
import { SKIP_PRIVILEGED } from './privileged';
import { sweep } from './sweep';

/** Gives the run its id and sweeps kernel objects left by crashed runs, before and after the suite. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const runId = String(process.pid);
  project.provide('sluiceRunId', runId);
  const privileged = !SKIP_PRIVILEGED && process.getuid?.() === 0;
  if (privileged) {
    const stale = await sweep();
    if (stale.length > 0) console.warn(`swept leftovers of earlier runs: ${stale.join(', ')}`);
  }
  return async () => {
    if (!privileged) return;
    // Removes the run's own roots; anything else listed here was leaked by a test and is worth a look.
    const removed = await sweep(runId);
    const leaked = removed.filter((item) => !item.startsWith('cgroup ') && !item.startsWith('bpffs '));
    if (leaked.length > 0) console.warn(`swept leftovers of this run: ${leaked.join(', ')}`);
  };
}
