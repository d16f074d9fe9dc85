/**
 * End-to-end helpers: real agents and controllers as processes (bin/ shims over dist/), backends and
 * client loops as processes inside a sandbox netns, agents' logs parsed as they come.
 *
 * Agents enter the node's netns with `nsenter --net` rather than `ip netns exec`, which would mount a
 * fresh /sys and hide bpffs and the cgroup tree the agent attaches to.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { firstJsonLine } from '../support/child-output';
import type { Netns, Sandbox } from '../support/sandbox';

export const ROOT = resolve(__dirname, '../..');
const FIXTURES = join(ROOT, 'test/fixtures');

export function requireBuilt(): void {
  for (const path of ['dist/agent/main.js', 'dist/controller/main.js']) {
    if (!existsSync(join(ROOT, path))) throw new Error(`${path} is missing: run make ts (make test does)`);
  }
}

/** Lines of a child's stdout, parsed as JSON when they are. */
export class LogTail {
  readonly lines: Array<Record<string, unknown>> = [];
  readonly raw: string[] = [];
  private waiters: Array<{
    test: (l: Record<string, unknown>) => boolean;
    resolve: (l: Record<string, unknown>) => void;
  }> = [];

  constructor(child: ChildProcess) {
    let pending = '';
    const onData = (chunk: Buffer) => {
      pending += chunk.toString();
      let newline = pending.indexOf('\n');
      while (newline >= 0) {
        const text = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        this.raw.push(text);
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(text) as Record<string, unknown>;
        } catch {
          parsed = { msg: text };
        }
        this.lines.push(parsed);
        this.waiters = this.waiters.filter((w) => {
          if (!w.test(parsed)) return true;
          w.resolve(parsed);
          return false;
        });
        newline = pending.indexOf('\n');
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
  }

  /** Resolves with the first line (already seen, or coming) that passes `test`. */
  waitFor(
    test: (l: Record<string, unknown>) => boolean,
    timeoutMs = 15_000,
    what = 'log line',
  ): Promise<Record<string, unknown>> {
    const seen = this.lines.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`no ${what} within ${timeoutMs} ms; last lines:\n${this.raw.slice(-15).join('\n')}`),
          ),
        timeoutMs,
      );
      this.waiters.push({
        test,
        resolve: (l) => {
          clearTimeout(timer);
          resolvePromise(l);
        },
      });
    });
  }

  count(test: (l: Record<string, unknown>) => boolean): number {
    return this.lines.filter(test).length;
  }
}

export const msgIs = (msg: string) => (l: Record<string, unknown>) => l.msg === msg;

export interface AgentProcess {
  readonly child: ChildProcess;
  readonly log: LogTail;
}

/** Starts bin/sluice-agent inside `netns`, attached to the sandbox cgroup, pins under `bpffs`. */
export function startAgent(
  sandbox: Sandbox,
  netns: Netns,
  args: readonly string[],
  bpffs = sandbox.bpffsDir,
  dns = 'off',
): AgentProcess {
  const argv = [
    'nsenter',
    `--net=/run/netns/${netns.name}`,
    process.execPath,
    join(ROOT, 'bin/sluice-agent'),
    '--cgroup',
    sandbox.cgroupPath,
    '--bpffs',
    bpffs,
    '--metrics',
    '127.0.0.1:0',
    '--dns',
    dns,
    '--log-level',
    'debug',
    ...args,
  ];
  const child = sandbox.spawn(argv);
  return { child, log: new LogTail(child) };
}

/** Starts bin/sluice-controller inside `netns` (so agents in the same netns reach it on loopback). */
export function startController(sandbox: Sandbox, netns: Netns, args: readonly string[]): AgentProcess {
  const argv = [
    'nsenter',
    `--net=/run/netns/${netns.name}`,
    process.execPath,
    join(ROOT, 'bin/sluice-controller'),
    ...args,
  ];
  const child = sandbox.spawn(argv);
  return { child, log: new LogTail(child) };
}

/** A backend that answers each connection with its name (test/fixtures/ident-server.js). */
export async function startBackend(
  sandbox: Sandbox,
  netns: Netns,
  host: string,
  name: string,
  port = 0,
): Promise<{ port: number; child: ChildProcess }> {
  const child = sandbox.spawn(
    [process.execPath, join(FIXTURES, 'ident-server.js'), host, String(port), name],
    { netns },
  );
  const { port: bound } = await firstJsonLine<{ port: number }>(child, 10_000);
  return { port: bound, child };
}

export interface LoopSummary {
  names: Record<string, number>;
  errors: Record<string, number>;
  events: Array<[number, string]>;
}

/** A client loop through the VIP from inside the node's netns and cgroup (test/fixtures/connect-loop.js). */
export function startLoop(
  sandbox: Sandbox,
  netns: Netns,
  vip: string,
  port: number,
  count: number,
  intervalMs: number,
): { child: ChildProcess; done: Promise<LoopSummary> } {
  const child = sandbox.spawn(
    [
      process.execPath,
      join(FIXTURES, 'connect-loop.js'),
      vip,
      String(port),
      String(count),
      String(intervalMs),
    ],
    { netns, inCgroup: true },
  );
  return { child, done: firstJsonLine<LoopSummary>(child, 10_000 + count * (intervalMs + 2_100)) };
}

export function writeCatalog(path: string, catalog: unknown): void {
  // Write then rename, as editors and config management do: the watcher sees one complete file.
  writeFileSync(`${path}.tmp`, stringify(catalog));
  renameSync(`${path}.tmp`, path);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** GETs a URL from inside a netns (node's http, so no curl is needed). */
export function fetchInNetns(netns: Netns, url: string): string {
  const script = `require('node:http').get(process.argv[1], (r) => { r.pipe(process.stdout); }).on('error', (e) => { console.error(e.message); process.exit(1); })`;
  return execFileSync('nsenter', [`--net=/run/netns/${netns.name}`, process.execPath, '-e', script, url], {
    encoding: 'utf8',
    timeout: 10_000,
  });
}

/** The agent's metrics URL, from its 'metrics listening' log line. */
export function metricsUrl(log: LogTail): Promise<string> {
  return log
    .waitFor((l) => l.msg === 'metrics listening', 15_000, 'metrics listening')
    .then((l) => {
      const address = l.address as { address: string; port: number };
      return `http://${address.address}:${address.port}/metrics`;
    });
}
