/**
 * Sandbox for bench/socket-lb.ts, which runs as a plain script (test/support/sandbox.ts imports vitest):
 * a cgroup under the cgroup v2 mount, any number of network namespaces with only lo (no route out), a
 * bpffs directory. cleanup() ends the processes it started (by pid) and removes what it made.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export interface BenchNetns {
  readonly name: string;
  addLoopbackAddress(cidr: string): void;
}

export interface BenchLbSandbox {
  readonly cgroupPath: string;
  readonly bpffsDir: string;
  netns(): BenchNetns;
  spawn(argv: readonly string[], options?: { netns?: BenchNetns; inCgroup?: boolean }): ChildProcess;
  cleanup(): Promise<void>;
}

function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mountPoint, fsType] = line.split(' ');
    if (fsType === 'cgroup2' && mountPoint) return mountPoint;
  }
  throw new Error('no cgroup v2 hierarchy is mounted');
}

export function createBenchLbSandbox(label: string): BenchLbSandbox {
  const tag = `${label}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const cgroupPath = join(cgroup2Mount(), tag);
  const bpffsDir = join('/sys/fs/bpf', tag);
  mkdirSync(cgroupPath);
  mkdirSync(bpffsDir);
  const namespaces: string[] = [];
  const children = new Set<ChildProcess>();
  return {
    cgroupPath,
    bpffsDir,
    netns() {
      const name = `slb${process.pid}-${namespaces.length}`;
      execFileSync('ip', ['netns', 'add', name]);
      namespaces.push(name);
      execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
      return {
        name,
        addLoopbackAddress: (cidr) => {
          execFileSync('ip', ['-n', name, 'addr', 'add', cidr, 'dev', 'lo']);
        },
      };
    },
    spawn(argv, options = {}) {
      let full = [...argv];
      if (options.netns) full = ['ip', 'netns', 'exec', options.netns.name, ...full];
      if (options.inCgroup)
        full = ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroupPath, ...full];
      const [file, ...args] = full;
      const child = spawn(file!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      children.add(child);
      child.on('exit', () => children.delete(child));
      return child;
    },
    async cleanup() {
      for (const child of children) {
        if (child.pid !== undefined && child.exitCode === null) {
          try {
            process.kill(child.pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      }
      for (const name of namespaces) {
        try {
          const pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' })
            .split(/\s+/)
            .filter(Boolean);
          for (const pid of pids) {
            try {
              process.kill(Number(pid), 'SIGKILL');
            } catch {
              // gone
            }
          }
          execFileSync('ip', ['netns', 'del', name]);
        } catch {
          // already removed
        }
      }
      for (let i = 0; i < 50 && existsSync(cgroupPath); i++) {
        try {
          rmdirSync(cgroupPath);
        } catch {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      rmSync(bpffsDir, { recursive: true, force: true });
    },
  };
}
