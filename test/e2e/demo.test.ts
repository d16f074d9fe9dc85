/**
 * `make demo` (examples/demo/demo.sh): it comes up, the live table shows connections spread over the
 * three backends, and Ctrl-C removes every process, the netns, the cgroup and the pins it made.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { cgroup2Mount, describePrivileged } from '../support/privileged';
import { LogTail, ROOT, requireBuilt, sleep } from './support';

beforeAll(() => requireBuilt());

/** The table's lines after the screen-clear sequence the demo redraws with. */
const HOME = `${String.fromCharCode(27)}[H`;
const strip = (line: string) =>
  line.includes(HOME) ? line.slice(line.lastIndexOf(HOME) + HOME.length) : line;

describePrivileged('make demo', () => {
  it('shows where connections go and cleans everything up on Ctrl-C', async () => {
    const child = spawn(join(ROOT, 'examples/demo/demo.sh'), [], { stdio: ['ignore', 'pipe', 'pipe'] });
    const id = `sluice-demo-${child.pid}`;
    const log = new LogTail(child);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await log.waitFor((l) => String(l.msg).startsWith('sluice demo is up'), 30_000, 'demo up');
      const metricsHint = await log.waitFor((l) =>
        String(l.msg).includes('curl -s http://127.0.0.1:9464/metrics'),
      );
      expect(String(metricsHint.msg)).toContain(id);
      // The table: every backend gets a share of the connections, in weight order 3:2:1.
      const row = (n: number) => (l: Record<string, unknown>) =>
        /^backend-\d \(127\.0\.1\.\d\)\s+\d+/.test(strip(String(l.msg))) &&
        String(l.msg).includes(`backend-${n}`);
      await log.waitFor(row(3), 20_000, 'a table row for backend-3');
      await sleep(2500);
      expect(existsSync(`/run/netns/${id}`)).toBe(true);
      const pids = readFileSync(join(cgroup2Mount()!, id, 'cgroup.procs'), 'utf8').trim();
      expect(pids).not.toBe('');
    } finally {
      child.kill('SIGINT');
    }
    await exited;
    expect(log.raw.join('\n')).toContain('demo: cleaning up');
    expect(existsSync(`/run/netns/${id}`)).toBe(false);
    expect(existsSync(join(cgroup2Mount()!, id))).toBe(false);
    expect(existsSync(`/sys/fs/bpf/${id}`)).toBe(false);
    const totals = log.raw
      .filter((l) => /^backend-\d/.test(strip(l)))
      .slice(-3)
      .map((l) => Number(l.trim().split(/\s+/).pop()));
    expect(totals).toHaveLength(3);
    expect(totals[0]!).toBeGreaterThan(totals[2]!);
  });
});
