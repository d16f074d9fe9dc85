/**
 * Socket-LB programming time alone: 10 000 services × 3 backends synced cold into the real pinned maps
 * through SocketLbDatapath.sync() (validation, desired state, selection tables, diff and batched map
 * writes), split into plan (pure) and map writes, then one service changed on top of them. No traffic,
 * no other datapaths: the full comparison is bench/socket-lb.ts.
 *
 * The first sync in a fresh process (cold JIT, empty maps) is measured in COLD_RUNS processes (default 5,
 * run one after another); later rounds in one process empty the maps (sync([])) and program them again.
 * Bounded: ROUNDS rounds (default 5), COLD_RUNS processes with a timeout each.
 * Run: make ts && node dist/bench/socket-lb-programming.js
 * (COUNT=10000 ROUNDS=5 COLD_RUNS=5; CPU_PROF=dir writes a profile of the first sync; NO_DOC=1 skips the doc)
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import type { ServiceSpec } from '../agent/datapath/model';
import { resolveLbSettings } from '../agent/datapath/settings';
import { SocketLb } from '../agent/datapath/socket-lb';
import { bpf, packageRoot } from '../native';
import { createKernelSandbox } from '../test/support/kernel-sandbox';
import { writeBenchmarkSection } from './report';

const ROOT = packageRoot(__dirname);
const ROUNDS = Math.max(1, Math.min(20, Number(process.env.ROUNDS ?? 5)));
const COUNT = Math.max(1, Math.min(65_536, Number(process.env.COUNT ?? 10_000)));
const BACKENDS = ['10.0.1.11', '10.0.1.12', '10.0.1.13'];
const PROFILE_DIR = process.env.CPU_PROF;
/** fresh processes whose first sync is measured (each prints its rounds as JSON; bounded by a timeout). */
const COLD_RUNS = Math.max(0, Math.min(20, Number(process.env.COLD_RUNS ?? 5)));
const CHILD = process.env.SLUICE_LBPROG_CHILD === '1';
const WRITE_DOC = process.env.NO_DOC !== '1';

const vipOf = (i: number): string => `10.96.${(i >> 8) & 255}.${i & 255}`;

function services(count: number): ServiceSpec[] {
  return Array.from({ length: count }, (_, i) => ({
    vip: vipOf(i),
    port: 80,
    backends: BACKENDS.map((address) => ({ address, port: 8080 })),
  }));
}

const median = (values: number[]): number => {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

async function main(): Promise<void> {
  const box = createKernelSandbox('bench-lbprog', String(process.pid));
  const lb = SocketLb.load(bpf, {
    objectDir: join(ROOT, 'build/bpf'),
    pinRoot: box.bpffsDir,
    settings: resolveLbSettings({ reclaimGraceMs: 0 }),
    reaper: false,
  });
  const rounds: { total: number; plan: number; writes: number }[] = [];
  const change: { total: number; writes: number }[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      if (round > 0) await lb.datapath.sync([]);
      const specs = services(COUNT);
      const profile = PROFILE_DIR && round === 0 ? new Session() : undefined;
      if (profile) {
        profile.connect();
        await profile.post('Profiler.enable');
        await profile.post('Profiler.setSamplingInterval', { interval: 250 });
        await profile.post('Profiler.start');
      }
      const t0 = performance.now();
      const synced = await lb.datapath.sync(specs);
      const total = performance.now() - t0;
      if (profile) {
        const { profile: data } = await profile.post('Profiler.stop');
        writeFileSync(
          join(PROFILE_DIR!, `socket-lb-programming-${process.pid}.cpuprofile`),
          JSON.stringify(data),
        );
        profile.disconnect();
      }
      if (synced.plan.summary.servicesAdded !== COUNT) throw new Error('expected a cold sync');
      rounds.push({ total, plan: synced.planMs, writes: synced.effectiveMs });
      process.stderr.write(
        `round ${round + 1}: ${total.toFixed(1)} ms (plan ${synced.planMs.toFixed(1)}, writes ${synced.effectiveMs.toFixed(1)})\n`,
      );
      for (let k = 0; k < 3; k++) {
        const one: ServiceSpec = {
          vip: vipOf(k * 7),
          port: 80,
          backends: BACKENDS.map((address, b) => ({
            address,
            port: 8080,
            weight: 1 + ((round + k + b) % 3),
          })),
          algorithm: 'weighted',
        };
        const t1 = performance.now();
        const res = await lb.datapath.update({ upsert: [one] });
        change.push({ total: performance.now() - t1, writes: res.effectiveMs });
      }
    }
  } finally {
    lb.close();
    await box.cleanup();
  }
  if (CHILD) {
    process.stdout.write(`${JSON.stringify(rounds[0])}\n`);
    return;
  }
  // More first syncs, each in a fresh process, run one after another after this one is done.
  const cold = rounds.slice(0, 1);
  for (let run = 1; run < COLD_RUNS; run++) {
    const out = execFileSync(process.execPath, [__filename], {
      env: { ...process.env, SLUICE_LBPROG_CHILD: '1', ROUNDS: '1', CPU_PROF: '' },
      encoding: 'utf8',
      timeout: 60_000,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    cold.push(JSON.parse(out.trim().split('\n').pop()!) as (typeof rounds)[number]);
  }
  const warm = rounds.slice(1);
  const cpuModel = readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? 'unknown CPU';
  const ms = (v: number) => `${v.toFixed(1)} ms`;
  const row = (what: string, rs: typeof rounds) =>
    `| ${what} | ${ms(median(rs.map((r) => r.total)))} | ${ms(median(rs.map((r) => r.plan)))} | ${ms(median(rs.map((r) => r.writes)))} |`;
  const section = [
    '## Socket-LB programming time (bench/socket-lb-programming.ts)',
    '',
    `Run ${new Date().toISOString()}, kernel ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()}, ${cpuModel}, 2 shared cores. ${COUNT} services × 3 backends synced from empty maps into the real pinned maps through SocketLbDatapath.sync(): plan = validation, desired state, selection tables and diff (pure); map writes = the batched writes until every service record is live. A fresh process's first sync runs with a cold JIT and small heap (the agent's case at start-up): ${cold.length} processes, one after another, median; later syncs in one process empty the maps and program them again (${warm.length} rounds, median). Target (issue 3): under 250 ms.`,
    '',
    '| sync | total | plan | map writes |',
    '|---|---:|---:|---:|',
    row(`first sync in a fresh process (cold JIT; median of ${cold.length} processes)`, cold),
    ...(warm.length > 0 ? [row(`again after emptying the maps (median of ${warm.length})`, warm)] : []),
    '',
    `Change one service on top of them (update()): ${median(change.map((c) => c.total)).toFixed(2)} ms, map writes ${median(change.map((c) => c.writes)).toFixed(2)} ms (median of ${change.length}).`,
    '',
  ].join('\n');
  if (WRITE_DOC) writeBenchmarkSection('socket-lb-programming', section);
  process.stdout.write(`${section}\n`);
}

main().catch((error) => {
  process.stderr.write(`${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
