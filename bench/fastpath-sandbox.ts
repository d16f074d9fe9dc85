/**
 * A minimal sandbox for bench/fastpath.ts, which runs as a plain script (test/support/sandbox.ts imports
 * vitest): a cgroup under the cgroup v2 mount, a netns with only lo (no route out), a bpffs directory.
 * cleanup() ends the processes it started (by pid) and removes all three.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export interface BenchSandbox {
  readonly cgroupPath: string;
  readonly bpffsDir: string;
  readonly netnsName: string;
  /** Starts a process in the netns, already in the cgroup when it execs. */
  spawn(argv: readonly string[]): ChildProcess;
  cleanup(): void;
}

function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mountPoint, fsType] = line.split(' ');
    if (fsType === 'cgroup2' && mountPoint) return mountPoint;
  }
  throw new Error('no cgroup v2 hierarchy is mounted');
}

export function createBenchSandbox(label: string): BenchSandbox {
  const tag = `${label}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const cgroupPath = join(cgroup2Mount(), tag);
  const bpffsDir = join('/sys/fs/bpf', tag);
  const netnsName = `sl-${tag}`.slice(0, 30);
  mkdirSync(cgroupPath);
  mkdirSync(bpffsDir);
  execFileSync('ip', ['netns', 'add', netnsName]);
  execFileSync('ip', ['-n', netnsName, 'link', 'set', 'lo', 'up']);
  const children = new Set<ChildProcess>();
  return {
    cgroupPath,
    bpffsDir,
    netnsName,
    spawn(argv) {
      const child = spawn(
        'sh',
        [
          '-c',
          'echo $$ > "$0/cgroup.procs" && exec "$@"',
          cgroupPath,
          'ip',
          'netns',
          'exec',
          netnsName,
          ...argv,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      children.add(child);
      child.on('exit', () => children.delete(child));
      return child;
    },
    cleanup() {
      for (const child of children) if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      try {
        execFileSync('ip', ['netns', 'del', netnsName]);
      } catch {
        // already gone
      }
      for (let i = 0; i < 50; i++) {
        try {
          rmdirSync(cgroupPath);
          break;
        } catch {
          execFileSync('sleep', ['0.1']);
        }
      }
      rmSync(bpffsDir, { recursive: true, force: true });
    },
  };
}
