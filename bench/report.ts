/**
 * Where benchmark results go: each benchmark owns one section of docs/benchmarks.md, between
 * `<!-- BEGIN name -->` and `<!-- END name -->`, and rewrites only that section, so benchmarks run at
 * different times never overwrite each other's results.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { packageRoot } from '../native';

export const BENCHMARKS_DOC = join(packageRoot(__dirname), 'docs/benchmarks.md');

/** Replaces the section `name` (appending it when missing) with `body`. */
export function writeBenchmarkSection(name: string, body: string, file = BENCHMARKS_DOC): void {
  const begin = `<!-- BEGIN ${name} -->`;
  const end = `<!-- END ${name} -->`;
  const block = `${begin}\n${body.trim()}\n${end}`;
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const from = text.indexOf(begin);
  const to = text.indexOf(end);
  const next =
    from >= 0 && to > from
      ? text.slice(0, from) + block + text.slice(to + end.length)
      : `${text.trimEnd()}\n\n${block}\n`;
  writeFileSync(file, next);
}

const BPF_STATS = '/proc/sys/kernel/bpf_stats_enabled';

/**
 * Whether the kernel's BPF run-time statistics are on (sysctl kernel.bpf_stats_enabled, or a process
 * holding a BPF_ENABLE_STATS fd). While on, every program run also reads the clock twice and updates
 * per-CPU counters (about 45 ns here), which biases any comparison with BPF programs on one side only.
 */
export const bpfStatsOn = (): boolean =>
  existsSync(BPF_STATS) && readFileSync(BPF_STATS, 'utf8').trim() !== '0';

/** Waits, bounded, until the statistics are off; throws rather than measure with them on. */
export async function waitForBpfStatsOff(timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (bpfStatsOn()) {
    if (Date.now() > deadline) {
      throw new Error(`${BPF_STATS} stayed on: every BPF program run would include the kernel's accounting`);
    }
    await sleep(500);
  }
}

/** Call after measuring: a run during which the statistics came on is not kept. */
export function assertBpfStatsStayedOff(): void {
  if (bpfStatsOn()) {
    throw new Error(
      `${BPF_STATS} came on during the run: its numbers include the kernel's accounting, not kept`,
    );
  }
}
