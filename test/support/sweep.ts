/**
 * Finds and removes what test runs made in the kernel: cgroups under `<cgroup2>/sluice-test-<run>`,
 * pins under `/sys/fs/bpf/sluice-test-<run>`, and namespaces named `sluice-t<run>-*`. A run id is the pid
 * of the vitest process that made them, so a sweep removes a dead run's leftovers and never another
 * live run's.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cgroup2Mount } from './host';

export const BPFFS_ROOT = '/sys/fs/bpf';
const RUN_ROOT_PREFIX = 'sluice-test-';
const NETNS_PREFIX = 'sluice-t';

export const runRootName = (runId: string): string => `${RUN_ROOT_PREFIX}${runId}`;
export const netnsPrefix = (runId: string): string => `${NETNS_PREFIX}${runId}-`;

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function cgroupPopulated(path: string): boolean {
  return /^populated 1$/m.test(readFileSync(join(path, 'cgroup.events'), 'utf8'));
}

/** Ends the processes in a cgroup subtree (only tests put processes there) and removes it, deepest first. */
export async function killCgroupTree(path: string): Promise<void> {
  if (!existsSync(path)) return;
  for (const entry of readdirSync(path)) {
    const child = join(path, entry);
    if (statSync(child).isDirectory()) await killCgroupTree(child);
  }
  for (let attempt = 0; attempt < 50; attempt++) {
    const pids = readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    if (pids.length === 0) break;
    killPids(pids);
    await sleep(20);
  }
  // Exiting tasks leave cgroup.procs before they leave the cgroup; rmdir fails (EBUSY) until they have.
  for (let attempt = 0; attempt < 100 && cgroupPopulated(path); attempt++) await sleep(20);
  try {
    rmdirSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/** Removes a bpffs directory with all its pins (unlinking a pin drops only that reference). */
export function removeBpffsDir(path: string): void {
  rmSync(path, { recursive: true, force: true });
}

function listNetns(): string[] {
  try {
    return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .map((line) => line.split(' ')[0] ?? '')
      .filter(Boolean);
  } catch {
    return [];
  }
}

function removeNetns(name: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' })
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
    killPids(pids);
    execFileSync('ip', ['netns', 'del', name]);
  } catch {
    // raced with another cleanup
  }
}

function runIdOf(name: string, prefix: string): number | undefined {
  if (!name.startsWith(prefix)) return undefined;
  const id = Number.parseInt(name.slice(prefix.length), 10);
  return Number.isFinite(id) ? id : undefined;
}

/**
 * Removes test leftovers: those of `runId` when given, else those of every run whose process is gone.
 * Returns what it removed, so a teardown can report a leak.
 */
export async function sweep(runId?: string): Promise<string[]> {
  const removed: string[] = [];
  const selected = (name: string, prefix: string): boolean => {
    const id = runIdOf(name, prefix);
    if (id === undefined) return false;
    return runId !== undefined ? String(id) === runId : !isAlive(id);
  };
  for (const ns of listNetns()) {
    if (selected(ns, NETNS_PREFIX)) {
      removeNetns(ns);
      removed.push(`netns ${ns}`);
    }
  }
  const cgroupRoot = cgroup2Mount();
  if (cgroupRoot && existsSync(cgroupRoot)) {
    for (const entry of readdirSync(cgroupRoot)) {
      if (selected(entry, RUN_ROOT_PREFIX)) {
        await killCgroupTree(join(cgroupRoot, entry));
        removed.push(`cgroup ${entry}`);
      }
    }
  }
  if (existsSync(BPFFS_ROOT)) {
    for (const entry of readdirSync(BPFFS_ROOT)) {
      if (selected(entry, RUN_ROOT_PREFIX)) {
        removeBpffsDir(join(BPFFS_ROOT, entry));
        removed.push(`bpffs ${entry}`);
      }
    }
  }
  return removed;
}
