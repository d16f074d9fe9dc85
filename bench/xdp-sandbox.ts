/**
 * The Sandbox that test/support/xdp-topology.ts needs, for bench/xdp.ts as a plain script
 * (test/support/sandbox.ts imports vitest): namespaces with only lo (no route out), veths created
 * inside them, a bpffs directory. cleanup() ends the processes it started (by pid) and removes the
 * namespaces (with their veths) and the bpffs directory.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Netns, Sandbox, VethPair } from '../test/support/sandbox';

const run = (argv: readonly string[]): string => {
  const [file, ...args] = argv;
  return execFileSync(file!, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
};

export function createXdpBenchSandbox(label: string): Sandbox {
  const id = `${label}-${process.pid}-${randomBytes(2).toString('hex')}`;
  const bpffsDir = join('/sys/fs/bpf', `sluice-bench-${id}`);
  mkdirSync(bpffsDir, { recursive: true });
  const namespaces: string[] = [];
  const children = new Set<ChildProcess>();
  const makeNetns = (name: string): Netns => ({
    name,
    exec: (argv) => run(['ip', 'netns', 'exec', name, ...argv]),
    addLoopbackAddress: (cidr) => {
      run(['ip', '-n', name, 'addr', 'add', cidr, 'dev', 'lo']);
    },
    ifindex: (link) => {
      const parsed = JSON.parse(run(['ip', '-n', name, '-j', 'link', 'show', 'dev', link])) as {
        ifindex: number;
      }[];
      if (!parsed[0]) throw new Error(`no link ${link} in ${name}`);
      return parsed[0].ifindex;
    },
  });
  return {
    id,
    cgroupPath: '',
    bpffsDir,
    netns() {
      const name = `slbx-${process.pid}-${randomBytes(3).toString('hex')}`;
      run(['ip', 'netns', 'add', name]);
      namespaces.push(name);
      run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
      return makeNetns(name);
    },
    veth(a, b, addrA, addrB): VethPair {
      const tag = randomBytes(3).toString('hex');
      const pair = { a: `sb${tag}a`, b: `sb${tag}b` };
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
    childCgroup() {
      throw new Error('the benchmark sandbox has no cgroup');
    },
    spawn(argv, options = {}) {
      const full = options.netns ? ['ip', 'netns', 'exec', options.netns.name, ...argv] : [...argv];
      const child = spawn(full[0]!, full.slice(1), {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: options.env ?? process.env,
      });
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
            // already gone
          }
        }
      }
      for (const name of namespaces.splice(0)) {
        for (const pid of run(['ip', 'netns', 'pids', name]).split(/\s+/).filter(Boolean).map(Number)) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        try {
          run(['ip', 'netns', 'del', name]);
        } catch {
          // already gone
        }
      }
      rmSync(bpffsDir, { recursive: true, force: true });
    },
  };
}
