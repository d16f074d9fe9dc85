/**
 * Benchmark: active health probes of thousands of backends, and what they cost the agent's event loop.
 *
 * A child process opens N real listeners on 127.0.0.1 (TCP accept-and-close, or HTTP answering 200),
 * so only the prober's work lands on the measured event loop. The parent runs the real HealthScheduler
 * with the real probers against them, one scenario at a time, and records with
 * perf_hooks.monitorEventLoopDelay how late the loop ran, plus probe rate, probe latency and CPU.
 *
 * Scenarios: "spread" is the production schedule (first probes spread over one interval, ±10% jitter);
 * "burst" forces every probe due at the same instant each interval (random() = 0, no jitter): the worst
 * case, where bounded concurrency is what keeps the loop responsive.
 *
 * Run: make ts && node dist/bench/health-probes.js [--targets 5000] [--seconds 3] [--rounds 3]
 * (about 2 minutes of two busy cores at the defaults.)
 * Writes bench/results/health.md and the `health` section of docs/benchmarks.md.
 */
import { fork } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { resolve } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { defaultProbers } from '../agent/health/probers';
import { DEFAULT_CONCURRENCY, DEFAULT_STARTS_PER_TURN, HealthScheduler } from '../agent/health/scheduler';
import type { ProbeProtocol, ProbeTarget } from '../agent/health/types';
import { packageRoot } from '../native';
import { writeBenchmarkSection } from './report';

const ROOT = packageRoot(__dirname);

interface Scenario {
  name: string;
  protocol: Extract<ProbeProtocol, 'tcp' | 'http'> | 'none';
  schedule: 'spread' | 'burst' | 'idle';
  concurrency: number;
  startsPerTurn: number;
  intervalMs: number;
}

const RESOLUTION_MS = 2;

interface Result extends Scenario {
  probes: number;
  failures: number;
  probesPerSecond: number;
  probeP50: number;
  probeP99: number;
  loopP50: number;
  loopP99: number;
  loopMax: number;
  peakQueued: number;
  cpuPerProbeUs: number;
  /** Prober process CPU time over wall time: near 100% means the one JS thread is saturated. */
  cpuPercent: number;
}

// ---- child: the listeners -------------------------------------------------------------------------

async function serve(count: number, protocol: string): Promise<void> {
  const servers: Server[] = [];
  const ports: number[] = [];
  for (let i = 0; i < count; i++) {
    const server =
      protocol === 'http'
        ? createHttpServer((_req, res) => {
            res.writeHead(200, { 'content-length': '2' });
            res.end('ok');
          })
        : createServer((socket) => socket.destroy());
    server.listen(0, '127.0.0.1');
    await new Promise<void>((r) => server.once('listening', () => r()));
    servers.push(server as Server);
    ports.push((server.address() as AddressInfo).port);
  }
  process.send?.({ ports });
  process.on('message', () => process.exit(0));
}

// ---- parent: the prober ---------------------------------------------------------------------------

async function startListeners(count: number, protocol: string) {
  const child = fork(__filename, ['--serve', String(count), '--protocol', protocol], { stdio: 'inherit' });
  const ports = await new Promise<number[]>((resolvePorts, reject) => {
    child.once('message', (m) => resolvePorts((m as { ports: number[] }).ports));
    child.once('exit', (code) => reject(new Error(`listener process exited with ${code}`)));
  });
  return {
    ports,
    stop: () =>
      new Promise<void>((r) => {
        child.once('exit', () => r());
        child.send('stop');
      }),
  };
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function runScenario(scenario: Scenario, ports: number[], seconds: number): Promise<Result> {
  const { intervalMs } = scenario;
  const burst = scenario.schedule === 'burst';
  const scheduler = new HealthScheduler({
    probers: defaultProbers(),
    logger: pino({ level: 'silent' }),
    concurrency: scenario.concurrency,
    startsPerTurn: scenario.startsPerTurn,
    jitter: burst ? 0 : 0.1,
    ...(burst ? { random: () => 0 } : {}),
  });
  const protocol = scenario.protocol;
  const targets: ProbeTarget[] = (protocol === 'none' ? [] : ports).map((port, i) => ({
    key: `bench/${i}`,
    service: 'bench/svc',
    address: '127.0.0.1',
    port,
    check: {
      protocol: protocol === 'none' ? 'tcp' : protocol,
      intervalMs,
      timeoutMs: 2000,
      healthyThreshold: 1,
      unhealthyThreshold: 1,
      path: '/healthz',
    },
  }));
  const durations: number[] = [];
  let failures = 0;
  const reasons = new Map<string, number>();
  scheduler.onResult((r) => {
    durations.push(r.durationMs);
    if (!r.outcome.ok) {
      failures++;
      reasons.set(r.outcome.reason, (reasons.get(r.outcome.reason) ?? 0) + 1);
    }
  });
  scheduler.setTargets(targets);
  const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  let peakQueued = 0;
  const sampler = setInterval(() => {
    peakQueued = Math.max(peakQueued, scheduler.stats().queued);
  }, 20);
  histogram.enable();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  scheduler.start();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  histogram.disable();
  clearInterval(sampler);
  await scheduler.stop();
  durations.sort((a, b) => a - b);
  if (failures > 0) console.error(`${scenario.name}: failures by reason`, Object.fromEntries(reasons));
  // The histogram holds the time between samples; what exceeds the sampling period is the delay.
  const ms = (ns: number) => Math.max(0, ns / 1e6 - RESOLUTION_MS);
  return {
    ...scenario,
    probes: durations.length,
    failures,
    probesPerSecond: durations.length / elapsed,
    probeP50: quantile(durations, 0.5),
    probeP99: quantile(durations, 0.99),
    loopP50: ms(histogram.percentile(50)),
    loopP99: ms(histogram.percentile(99)),
    loopMax: ms(histogram.max),
    peakQueued,
    cpuPerProbeUs: (cpu.user + cpu.system) / Math.max(1, durations.length),
    cpuPercent: (cpu.user + cpu.system) / 1e4 / elapsed,
  };
}

/** Per field, the median over rounds (failures: the total). */
function medianResult(scenario: Scenario, list: Result[]): Result {
  const med = (pick: (r: Result) => number) => {
    const values = list.map(pick).sort((a, b) => a - b);
    const mid = values.length >> 1;
    return values.length % 2 ? values[mid]! : (values[mid - 1]! + values[mid]!) / 2;
  };
  return {
    ...scenario,
    probes: list.reduce((n, r) => n + r.probes, 0),
    failures: list.reduce((n, r) => n + r.failures, 0),
    probesPerSecond: med((r) => r.probesPerSecond),
    probeP50: med((r) => r.probeP50),
    probeP99: med((r) => r.probeP99),
    loopP50: med((r) => r.loopP50),
    loopP99: med((r) => r.loopP99),
    loopMax: med((r) => r.loopMax),
    peakQueued: med((r) => r.peakQueued),
    cpuPerProbeUs: med((r) => r.cpuPerProbeUs),
    cpuPercent: med((r) => r.cpuPercent),
  };
}

function table(results: Result[], targets: number, seconds: number, rounds: number, load: string): string {
  const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '-');
  const lines = [
    `${targets} real loopback listeners per protocol (separate processes), ${seconds} s per scenario, ` +
      `${rounds} interleaved rounds, median per column (failed: total), ` +
      `${cpus().length} CPUs shared with other work (1-minute load average ${load}), node ${process.version}. ` +
      'Event-loop delay: ' +
      `perf_hooks.monitorEventLoopDelay sampled every ${RESOLUTION_MS} ms, minus that period (0 = on time). ` +
      '"spread": the production schedule (first probes spread over one interval, ±10% jitter); "burst": every ' +
      'probe due at the same instant each interval (worst case). "idle" is the same process with no probes: ' +
      "the machine's noise floor in this run.",
    '',
    '| protocol | schedule | interval ms | concurrency | starts/turn | probes/s | failed | probe p50 ms | probe p99 ms | loop delay p50 ms | loop delay p99 ms | loop delay max ms | peak queued | CPU µs/probe | CPU % |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const perTurn = r.startsPerTurn >= targets ? 'unlimited' : String(r.startsPerTurn);
    const concurrency = r.concurrency >= targets ? 'unlimited' : String(r.concurrency);
    lines.push(
      `| ${r.protocol} | ${r.schedule} | ${r.schedule === 'idle' ? '-' : r.intervalMs} | ${concurrency} | ${perTurn} | ${f(r.probesPerSecond, 0)} | ${r.failures} | ${f(r.probeP50)} | ${f(r.probeP99)} | ${f(r.loopP50)} | ${f(r.loopP99)} | ${f(r.loopMax)} | ${r.peakQueued} | ${r.schedule === 'idle' ? '-' : f(r.cpuPerProbeUs, 0)} | ${f(r.cpuPercent, 0)} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      serve: { type: 'string' },
      protocol: { type: 'string', default: 'tcp' },
      targets: { type: 'string', default: '5000' },
      seconds: { type: 'string', default: '3' },
      rounds: { type: 'string', default: '3' },
    },
  });
  if (values.serve) {
    await serve(Number(values.serve), values.protocol!);
    return;
  }
  const targets = Number(values.targets);
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  const scenarios: Scenario[] = [];
  for (const protocol of ['tcp', 'http'] as const) {
    const s = (
      schedule: 'spread' | 'burst',
      intervalMs: number,
      concurrency: number,
      startsPerTurn: number,
    ) =>
      scenarios.push({
        name: `${protocol} ${schedule} interval=${intervalMs} concurrency=${concurrency} startsPerTurn=${startsPerTurn}`,
        protocol,
        schedule,
        concurrency,
        startsPerTurn,
        intervalMs,
      });
    // The catalog's default interval (5s), then the 1s stress case.
    s('spread', 5000, DEFAULT_CONCURRENCY, DEFAULT_STARTS_PER_TURN);
    s('spread', 1000, DEFAULT_CONCURRENCY, DEFAULT_STARTS_PER_TURN);
    s('burst', 1000, targets, targets);
    s('burst', 1000, DEFAULT_CONCURRENCY, targets);
    s('burst', 1000, DEFAULT_CONCURRENCY, DEFAULT_STARTS_PER_TURN);
    s('burst', 1000, 64, DEFAULT_STARTS_PER_TURN);
  }
  const loadBefore = loadavg()[0]!.toFixed(1);
  const idle: Scenario = {
    name: 'idle',
    protocol: 'none',
    schedule: 'idle',
    concurrency: 1,
    startsPerTurn: 1,
    intervalMs: 1000,
  };
  const all = [idle, ...scenarios];
  const runs = new Map<Scenario, Result[]>(all.map((sc) => [sc, []]));
  const listeners = {
    tcp: await startListeners(targets, 'tcp'),
    http: await startListeners(targets, 'http'),
  };
  try {
    // Rounds interleave the scenarios so a burst of load from elsewhere hits all of them alike.
    for (let round = 1; round <= rounds; round++) {
      for (const scenario of all) {
        const ports = scenario.protocol === 'none' ? [] : listeners[scenario.protocol].ports;
        const result = await runScenario(scenario, ports, seconds);
        console.log(
          `round ${round} ${scenario.name}: ${result.probesPerSecond.toFixed(0)} probes/s, ${result.failures} failed, ` +
            `CPU ${result.cpuPercent.toFixed(0)}%, ` +
            `loop delay p99 ${result.loopP99.toFixed(1)} ms max ${result.loopMax.toFixed(1)} ms, ` +
            `probe p99 ${result.probeP99.toFixed(1)} ms`,
        );
        runs.get(scenario)!.push(result);
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  } finally {
    await listeners.tcp.stop();
    await listeners.http.stop();
  }
  const results = all.map((scenario) => medianResult(scenario, runs.get(scenario)!));
  const body = `## Health probes (bench/health-probes.ts)\n\n${table(results, targets, seconds, rounds, `${loadBefore} at the start, ${loadavg()[0]!.toFixed(1)} at the end`)}\n`;
  mkdirSync(resolve(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(resolve(ROOT, 'bench/results/health.md'), `${body}\n`);
  writeBenchmarkSection('health', body);
  console.log(body);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
