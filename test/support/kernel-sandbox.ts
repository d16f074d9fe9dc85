/**
 * Per-test kernel sandboxes: a cgroup under the run's test root, network namespaces with no route out,
 * veth pairs created directly inside those namespaces (never in the host namespace), and a bpffs
 * directory for pins. Everything a sandbox creates is removed by cleanup(), also after a failure, and
 * the sweep (sweep.ts) removes whatever a crashed run left behind.
 *
 * No vitest here, so benchmark scripts use the same sandboxes as the tests; test files use sandbox.ts,
 * which adds the run id from the global setup and before/after hooks.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2Mount } from './host';
import { BPFFS_ROOT, killCgroupTree, netnsPrefix, removeBpffsDir, runRootName } from './sweep';

export interface Netns {
  readonly name: string;
  /** Runs a command inside the namespace and returns its stdout. */
  exec(argv: readonly string[]): string;
  /** Adds an address to lo inside the namespace (e.g. a backend address such as 10.0.1.11/32). */
  addLoopbackAddress(cidr: string): void;
  /** ifindex of a link inside the namespace. */
  ifindex(link: string): number;
}

export interface VethPair {
  /** Link name in the first namespace. */
  readonly a: string;
  /** Link name in the second namespace. */
  readonly b: string;
}

export interface SpawnOptions {
  /** Run inside this namespace (ip netns exec). */
  netns?: Netns;
  /** Move the process into the sandbox cgroup before it starts, so cgroup BPF hooks apply to it. */
  inCgroup?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface Sandbox {
  readonly id: string;
  /** A fresh cgroup v2 directory for this sandbox (under the per-run test root). */
  readonly cgroupPath: string;
  /** A fresh bpffs directory for this sandbox's pins. */
  readonly bpffsDir: string;
  /** Creates a network namespace with only `lo` (up): nothing in it can route out of the machine. */
  netns(): Netns;
  /** Creates a veth pair with one end in each namespace, both up, optionally with addresses. */
  veth(a: Netns, b: Netns, addrA?: string, addrB?: string): VethPair;
  /** Creates a child cgroup of this sandbox's cgroup. */
  childCgroup(name: string): string;
  /** Starts a process (tracked: cleanup() ends it by pid). */
  spawn(argv: readonly string[], options?: SpawnOptions): ChildProcess;
  /** Removes everything this sandbox made. Safe to call twice. */
  cleanup(): Promise<void>;
}

let counter = 0;

function run(argv: readonly string[]): string {
  const [file, ...args] = argv;
  if (!file) throw new Error('empty argv');
  return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Makes a sandbox whose kernel objects carry `runId` (the pid of the process that owns the run: the
 * vitest main process, or a benchmark script), so the sweep can remove them if that process dies.
 */
export function createKernelSandbox(label: string, runId: string): Sandbox {
  const id = `${label.replace(/[^a-z0-9-]/gi, '-').slice(0, 24)}-${process.pid}-${++counter}`;
  const cgroupRoot = cgroup2Mount();
  if (!cgroupRoot) throw new Error('no cgroup v2 hierarchy is mounted');
  const runCgroup = join(cgroupRoot, runRootName(runId));
  const cgroupPath = join(runCgroup, id);
  mkdirSync(cgroupPath, { recursive: true });
  const bpffsDir = join(BPFFS_ROOT, runRootName(runId), id);
  mkdirSync(bpffsDir, { recursive: true });

  const namespaces: string[] = [];
  const children = new Set<ChildProcess>();
  let cleaned = false;

  const makeNetns = (name: string): Netns => ({
    name,
    exec: (argv) => run(['ip', 'netns', 'exec', name, ...argv]),
    addLoopbackAddress: (cidr) => {
      run(['ip', '-n', name, 'addr', 'add', cidr, 'dev', 'lo']);
    },
    ifindex: (link) => {
      const out = run(['ip', '-n', name, '-j', 'link', 'show', 'dev', link]);
      const parsed = JSON.parse(out) as Array<{ ifindex: number }>;
      const index = parsed[0]?.ifindex;
      if (index === undefined) throw new Error(`no link ${link} in ${name}`);
      return index;
    },
  });

  return {
    id,
    cgroupPath,
    bpffsDir,
    netns() {
      const name = `${netnsPrefix(runId)}${randomBytes(3).toString('hex')}`;
      run(['ip', 'netns', 'add', name]);
      namespaces.push(name);
      run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
      return makeNetns(name);
    },
    veth(a, b, addrA, addrB) {
      const tag = randomBytes(3).toString('hex');
      const pair = { a: `sl${tag}a`, b: `sl${tag}b` };
      run(['ip', 'link', 'add', pair.a, 'netns', a.name, 'type', 'veth', 'peer', pair.b, 'netns', b.name]);
      for (const [ns, link, addr] of [
        [a, pair.a, addrA],
        [b, pair.b, addrB],
      ] as const) {
        if (addr) run(['ip', '-n', ns.name, 'addr', 'add', addr, 'dev', link]);
        run(['ip', '-n', ns.name, 'link', 'set', link, 'up']);
      }
      return pair;
    },
    childCgroup(name) {
      const path = join(cgroupPath, name);
      mkdirSync(path, { recursive: true });
      return path;
    },
    spawn(argv, options = {}) {
      let full = [...argv];
      if (options.netns) full = ['ip', 'netns', 'exec', options.netns.name, ...full];
      if (options.inCgroup) {
        // The shell joins the cgroup first, then execs the real program, so its very first socket call
        // already runs under the cgroup's BPF hooks. It must come before `ip netns exec`, which mounts a
        // fresh /sys where the cgroup tree is not visible.
        full = ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroupPath, ...full];
      }
      const [file, ...args] = full;
      const child = spawn(file!, args, { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
      children.add(child);
      child.on('exit', () => children.delete(child));
      return child;
    },
    async cleanup() {
      if (cleaned) return;
      cleaned = true;
      for (const child of children) {
        if (child.pid !== undefined && child.exitCode === null) {
          try {
            process.kill(child.pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      }
      for (const name of namespaces) {
        // Processes we started inside the namespace (by pid), then the namespace and its veths.
        const pids = run(['ip', 'netns', 'pids', name]).split(/\s+/).filter(Boolean).map(Number);
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        try {
          run(['ip', 'netns', 'del', name]);
        } catch {
          // already removed
        }
      }
      await killCgroupTree(cgroupPath);
      removeBpffsDir(bpffsDir);
    },
  };
}

/** Reads a cgroup's member pids (for assertions and debugging). */
export function cgroupPids(path: string): number[] {
  return readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
}
