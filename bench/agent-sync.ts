/**
 * Agent sync benchmark: the node agent's sync loop (agent/node-agent.ts) over the socket-LB datapath with
 * the in-memory writer (agent/datapath/writer-memory.ts), 10 000 services × 3 backends.
 *
 *   make ts && node dist/bench/agent-sync.js [--services 10000] [--runs 7] [--dry-run]
 *
 * Measures, p50 (and min, max) of several runs:
 * - cold apply: a fresh agent and empty maps, applyCatalog of the whole catalog until ACK;
 * - one-service catalog change: a new catalog version where one service's backend weights changed (the
 *   other services are the same objects, as the controller link's delta handling gives them) until ACK;
 * - one health transition: a backend turning unhealthy, from the transition until the datapath write
 *   that takes it out of selection has returned.
 * Writes the `agent-sync` section of docs/benchmarks.md (bench/report.ts) and bench/results/agent-sync.md.
 * No health probes run: the scheduler is a stand-in that only delivers the transitions the bench makes.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { Registry } from 'prom-client';
import { SocketLbDatapath } from '../agent/datapath/datapath';
import { resolveLbSettings } from '../agent/datapath/settings';
import { createMemoryDatapathWriter } from '../agent/datapath/writer-memory';
import { SocketLbSink } from '../agent/datapath-bpf';
import type { HealthScheduler, HealthTransition } from '../agent/health/scheduler';
import { AgentMetrics } from '../agent/metrics';
import { type DataplaneSink, healthKey, NodeAgent } from '../agent/node-agent';
import { type Backend, type Catalog, parseCatalog, type Service } from '../controller/catalog';
import { writeBenchmarkSection } from './report';

const ROOT = join(__dirname, '..', '..');

/** The catalog; service `roundRobin` (if given) uses round-robin instead of weighted. */
function catalogText(services: number, roundRobin?: number): string {
  return JSON.stringify({
    domain: 'mesh.local',
    services: Array.from({ length: services }, (_, i) => ({
      name: `svc-${i}`,
      namespace: `ns-${i % 50}`,
      vip: `10.${96 + Math.floor(i / 65_025)}.${Math.floor(i / 255) % 255}.${(i % 255) + 1}`,
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      algorithm: i === roundRobin ? 'round-robin' : 'weighted',
      backends: [1, 2, 3].map((b) => ({
        address: `10.${b}.${Math.floor(i / 250) % 250}.${(i % 250) + 1}`,
        node: `node-${(i + b) % 20}`,
        weight: 1,
      })),
    })),
  });
}

/** Delivers the transitions the bench makes; probes nothing. */
class StandInScheduler {
  private readonly listeners = new Set<(t: HealthTransition) => void>();
  onTransition(listener: (t: HealthTransition) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  onResult(): () => void {
    return () => undefined;
  }
  setTargets(): void {}
  start(): void {}
  async stop(): Promise<void> {}
  emit(service: Service, backend: Backend, to: 'healthy' | 'unhealthy'): void {
    const target = {
      key: healthKey(service.key, backend),
      service: service.key,
      address: backend.address,
      port: backend.port ?? 8080,
      check: {} as never,
    };
    for (const l of this.listeners) {
      l({
        target,
        from: to === 'healthy' ? 'unhealthy' : 'healthy',
        to,
        reason: 'bench',
        at: Date.now(),
      } as unknown as HealthTransition);
    }
  }
}

/** Reports when a write returned. */
function observed(sink: DataplaneSink): DataplaneSink & { next(): Promise<number> } {
  let waiter: ((at: number) => void) | undefined;
  const done = () => {
    waiter?.(performance.now());
    waiter = undefined;
  };
  const wrapped: DataplaneSink & { next(): Promise<number> } = {
    async apply(services) {
      await sink.apply(services);
      done();
    },
    readStatus: () => sink.readStatus(),
    next: () => new Promise<number>((resolve) => (waiter = resolve)),
  };
  const update = (sink as { update?: DataplaneSink['apply'] }).update;
  if (update) {
    Object.assign(wrapped, {
      async update(change: unknown) {
        await update.call(sink, change as never);
        done();
      },
    });
  }
  return wrapped;
}

function makeAgent() {
  const settings = resolveLbSettings({});
  const writer = createMemoryDatapathWriter({ settings });
  const datapath = new SocketLbDatapath(writer, settings);
  const sink = observed(new SocketLbSink(datapath, undefined as never, '/unused'));
  const health = new StandInScheduler();
  const agent = new NodeAgent({
    node: 'node-0',
    sink,
    health: health as unknown as HealthScheduler,
    log: pino({ level: 'silent' }),
    metrics: new AgentMetrics(new Registry(), { processMetrics: false }),
  });
  return { agent, sink, health, writer };
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
};
const fmt = (xs: number[]): string =>
  `${pct(xs, 50).toFixed(1)} | ${Math.min(...xs).toFixed(1)} | ${Math.max(...xs).toFixed(1)}`;

function withWeight(catalog: Catalog, index: number, weight: number): Catalog {
  return {
    ...catalog,
    services: catalog.services.map((s, i) =>
      i === index ? { ...s, backends: s.backends.map((b, j) => (j === 0 ? { ...b, weight } : b)) } : s,
    ),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      services: { type: 'string', default: '10000' },
      runs: { type: 'string', default: '7' },
      'dry-run': { type: 'boolean', default: false },
    },
  });
  const n = Number(values.services);
  const runs = Number(values.runs);
  const parsed = parseCatalog(catalogText(n), 'bench.json');
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors.slice(0, 3)));
  const catalog = parsed.catalog;

  const cold: number[] = [];
  for (let r = 0; r < Math.min(runs, 3); r++) {
    const { agent } = makeAgent();
    const t0 = performance.now();
    const result = await agent.applyCatalog({ version: 1n, catalog });
    cold.push(performance.now() - t0);
    if (!result.ok) throw new Error(result.reason);
    await agent.stop();
  }

  const { agent, sink, health, writer } = makeAgent();
  const first = await agent.applyCatalog({ version: 1n, catalog });
  if (!first.ok) throw new Error(first.reason);
  const change: number[] = [];
  let current = catalog;
  let version = 1n;
  for (let r = 0; r < runs; r++) {
    const index = (r * 997) % n;
    current = withWeight(current, index, 2 + (r % 3));
    version++;
    const t0 = performance.now();
    const result = await agent.applyCatalog({ version, catalog: current });
    change.push(performance.now() - t0);
    if (!result.ok) throw new Error(result.reason);
  }

  // The file source parses every version anew: no entry is the same object, all are compared by value.
  const reparsed: number[] = [];
  for (let r = 0; r < runs; r++) {
    const next = parseCatalog(catalogText(n, (r * 991) % n), 'bench.json');
    if (!next.ok) throw new Error(JSON.stringify(next.errors.slice(0, 3)));
    version++;
    const t0 = performance.now();
    const result = await agent.applyCatalog({ version, catalog: next.catalog });
    reparsed.push(performance.now() - t0);
    if (!result.ok) throw new Error(result.reason);
    current = next.catalog;
  }

  const transition: number[] = [];
  for (let r = 0; r < runs; r++) {
    const service = current.services[(r * 1_009) % n]!;
    const backend = service.backends[1]!;
    const done = sink.next();
    const t0 = performance.now();
    health.emit(service, backend, 'unhealthy');
    transition.push((await done) - t0);
  }
  const services = writer.state.services.size;
  await agent.stop();

  const load = loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  const body = [
    '## Agent sync loop (`bench/agent-sync.ts`)',
    '',
    `${n} services × 3 backends (${services} datapath services), the agent over the socket-LB datapath with`,
    'the in-memory writer (no kernel), ms, p50 | min | max:',
    '',
    '| step | runs | ms (p50 \\| min \\| max) |',
    '|---|---:|---|',
    `| cold apply (whole catalog, empty maps) | ${cold.length} | ${fmt(cold)} |`,
    `| one-service catalog change (until ACK) | ${change.length} | ${fmt(change)} |`,
    `| a version parsed anew (file source: 1–2 services changed, every entry compared by value) | ${reparsed.length} | ${fmt(reparsed)} |`,
    `| one health transition (until the write returned) | ${transition.length} | ${fmt(transition)} |`,
    '',
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, load ${load}, node ${process.version}. ` +
      'The in-memory writer has no reclaim grace period (the BPF one waits lb.reclaimGraceMs, 20 ms, ' +
      'when a change removed members).',
  ].join('\n');
  console.log(body);
  if (values['dry-run']) return;
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench/results/agent-sync.md'), `${body}\n`);
  writeBenchmarkSection('agent-sync', body);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
