/**
 * Runs build/fastpath-io (test/bpf/fastpath-io.c) inside a sandbox's netns and cgroup, so both ends of its
 * loopback connections are under the cgroup's BPF hooks, and returns the JSON line it prints.
 * Used by test/bpf/fastpath*.test.ts and bench/fastpath.ts.
 */

import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../native';
import type { Netns, SpawnOptions } from './sandbox';

/** What the runner needs of a sandbox: test/support/sandbox.ts, or bench/fastpath-sandbox.ts. */
export interface Spawner {
  spawn(argv: readonly string[], options?: SpawnOptions): ChildProcess;
}

export const FASTPATH_IO = join(packageRoot(__dirname), 'build', 'fastpath-io');

export interface FastpathIoOptions {
  /** O_NONBLOCK sockets driven by poll() (-n), as event loops use them; default blocking reads. */
  nonblocking?: boolean;
  ipv6?: boolean;
  /** With nonblocking: accepted sockets block (-b), as a blocking worker behind a non-blocking acceptor. */
  blockingAccept?: boolean;
  /** Listen on this port (-p); default ephemeral. */
  port?: number;
  /** Benchmarks (-c): pin the client side to cpus[0] and the server side to cpus[1]. */
  cpus?: readonly [number, number];
  /** Kill the helper after this long (default 60 s). */
  timeoutMs?: number;
}

export type FastpathIoResult = Record<string, unknown> & { ok: boolean };

export function fastpathIoAvailable(): string | undefined {
  return existsSync(FASTPATH_IO) ? undefined : `${FASTPATH_IO} not built (make test-helpers)`;
}

/** Runs one scenario; rejects on a crash, a timeout or output that is not one JSON object. */
export function runFastpathIo(
  sandbox: Spawner,
  netns: Netns | undefined,
  args: readonly (string | number)[],
  options: FastpathIoOptions = {},
): Promise<FastpathIoResult> {
  const flags = [
    ...(options.ipv6 ? ['-6'] : []),
    ...(options.nonblocking ? ['-n'] : []),
    ...(options.blockingAccept ? ['-b'] : []),
    ...(options.port ? ['-p', String(options.port)] : []),
    ...(options.cpus ? ['-c', options.cpus.join(',')] : []),
  ];
  const argv = [FASTPATH_IO, ...flags, ...args.map(String)];
  const child = sandbox.spawn(argv, netns ? { netns, inCgroup: true } : {});
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      reject(new Error(`${argv.join(' ')}: no result within ${options.timeoutMs ?? 60_000} ms (stall?)`));
    }, options.timeoutMs ?? 60_000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        resolvePromise(JSON.parse(line) as FastpathIoResult);
      } catch {
        reject(
          new Error(
            `${argv.join(' ')}: exit ${code ?? signal}, stdout ${JSON.stringify(stdout)}, stderr ${stderr}`,
          ),
        );
      }
    });
  });
}

/** Starts a scenario that prints a first line and keeps running (hold); resolves with that line. */
export function startFastpathIo(
  sandbox: Spawner,
  netns: Netns | undefined,
  args: readonly (string | number)[],
  options: FastpathIoOptions = {},
): Promise<{ first: FastpathIoResult; exited: Promise<void> }> {
  const flags = [...(options.ipv6 ? ['-6'] : []), ...(options.nonblocking ? ['-n'] : [])];
  const child = sandbox.spawn(
    [FASTPATH_IO, ...flags, ...args.map(String)],
    netns ? { netns, inCgroup: true } : {},
  );
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  return new Promise((resolvePromise, reject) => {
    let stdout = '';
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      const nl = stdout.indexOf('\n');
      if (nl >= 0) {
        try {
          resolvePromise({ first: JSON.parse(stdout.slice(0, nl)) as FastpathIoResult, exited });
        } catch (err) {
          reject(err);
        }
      }
    });
    child.on('exit', (code) => reject(new Error(`fastpath-io exited (${code}) before its first line`)));
  });
}
