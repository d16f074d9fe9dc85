/**
 * The node agent's sync loop above the maps: the plan (locality, draining, address families, ports), ACK
 * and NACK through the real socket-LB writer over in-memory maps (a capacity limit NACKs and keeps the
 * last good state), and a real health transition (a real TCP server closed) applied at once.
 */
import { createServer, type Server } from 'node:net';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { nextServices, remoteHealthOf } from '../../agent/controller-link';
import { SocketLbDatapath } from '../../agent/datapath/datapath';
import { resolveLbSettings } from '../../agent/datapath/settings';
import { createMemoryDatapathWriter } from '../../agent/datapath/writer-memory';
import { SocketLbSink, toServiceSpecs } from '../../agent/datapath-bpf';
import { afterEachPlan, MemorySink } from '../../agent/datapath-sink';
import { defaultProbers } from '../../agent/health/probers';
import { HealthScheduler } from '../../agent/health/scheduler';
import { AgentMetrics } from '../../agent/metrics';
import { type DataplaneSink, healthKey, NodeAgent, planServices, probeTargets } from '../../agent/node-agent';
import { type Catalog, parseCatalog } from '../../controller/catalog';

const log = pino({ level: 'silent' });

function parse(yaml: string): Catalog {
  const result = parseCatalog(yaml, 'test.yaml');
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.catalog;
}

function webCatalog(extra = '', backends?: string): Catalog {
  return parse(`
domain: mesh.local
services:
  - name: web
    namespace: default
    vip: [10.96.0.10, "fd00::10"]
    ports: [{ name: http, port: 80, targetPort: 8080, protocol: TCP }]
    algorithm: weighted
    trafficDistribution: PreferNode
${extra}
    backends:
${
  backends ??
  `      - { address: 10.0.1.11, weight: 3, node: node-a, zone: z1 }
      - { address: 10.0.2.12, port: 9090, weight: 1, node: node-b, zone: z1 }
      - { address: "fd00::12", weight: 1, node: node-b, zone: z1 }
      - { address: 10.0.3.13, weight: 0, node: node-a, zone: z1 }`
}
`);
}

function services(n: number): Catalog {
  const list = Array.from(
    { length: n },
    (
      _,
      i,
    ) => `  - { name: s${i}, namespace: default, vip: 10.96.1.${i + 1}, ports: [{ port: 80, targetPort: 8080 }],
      backends: [{ address: 10.0.9.${i + 1} }] }`,
  ).join('\n');
  return parse(`domain: mesh.local\nservices:\n${list}\n`);
}

describe('planServices', () => {
  it('programs the local tier, drains the rest, keeps families apart and resolves ports', () => {
    const plan = planServices({
      catalog: webCatalog(),
      node: 'node-a',
      zone: 'z1',
      health: () => 'healthy',
      ejected: () => false,
    });
    expect(plan.choices.get('default/web')).toMatchObject({ tier: 'node', panic: false });
    const v4 = plan.services.find((s) => s.vip === '10.96.0.10')!;
    expect(v4.backends).toEqual([
      {
        id: 'default/web|10.0.1.11:0',
        address: '10.0.1.11',
        port: 8080,
        weight: 3,
        local: true,
        draining: false,
      },
      {
        id: 'default/web|10.0.2.12:9090',
        address: '10.0.2.12',
        port: 9090,
        weight: 1,
        local: false,
        draining: true,
      },
    ]);
    const v6 = plan.services.find((s) => s.vip === 'fd00::10')!;
    expect(v6.backends.map((b) => [b.address, b.draining])).toEqual([['fd00::12', true]]);
  });

  it('falls through to the next tier when the local backend is unhealthy or ejected', () => {
    for (const why of ['unhealthy', 'ejected'] as const) {
      const plan = planServices({
        catalog: webCatalog(),
        node: 'node-a',
        zone: 'z1',
        health: (_, b) => (why === 'unhealthy' && b.address === '10.0.1.11' ? 'unhealthy' : 'healthy'),
        ejected: (_, b) => why === 'ejected' && b.address === '10.0.1.11',
      });
      expect(plan.choices.get('default/web')?.tier).toBe('zone');
      const v4 = plan.services.find((s) => s.vip === '10.96.0.10')!;
      expect(v4.backends.filter((b) => !b.draining).map((b) => b.address)).toEqual(['10.0.2.12']);
    }
  });

  it('probes only the backends this node owns, with weight above 0', () => {
    const catalog = webCatalog(
      '    healthCheck: { protocol: http, path: /healthz, interval: 1s, timeout: 500ms, healthyThreshold: 2, unhealthyThreshold: 3 }',
    );
    const targets = probeTargets(catalog, (_, b) => b.node === 'node-a');
    expect(targets.map((t) => [t.key, t.port, t.check.protocol, t.check.path])).toEqual([
      [healthKey('default/web', { address: '10.0.1.11', port: null }), 8080, 'http', '/healthz'],
    ]);
  });

  it('converts to the socket-LB model with draining, affinity and ejection', () => {
    const catalog = webCatalog(
      '    affinity: { mode: client, timeout: 90s }\n    outlierDetection: { consecutiveFailures: 2, baseEjectionTime: 10s, maxEjectionPercent: 30 }',
    );
    const plan = planServices({
      catalog,
      node: 'node-a',
      zone: 'z1',
      health: () => 'healthy',
      ejected: () => false,
    });
    const [spec] = toServiceSpecs(plan.services);
    expect(spec).toMatchObject({
      vip: '10.96.0.10',
      port: 80,
      protocol: 'tcp',
      algorithm: 'weighted',
      affinity: { timeoutSeconds: 90 },
      ejection: { threshold: 2, baseMs: 10_000, maxEjectionPercent: 30 },
    });
    expect(spec?.backends.map((b) => b.state)).toEqual(['active', 'draining']);
  });
});

describe('controller link helpers', () => {
  it('applies deltas over the services it has and reads the merged health', () => {
    const base = webCatalog().services.map((s) => ({
      ...s,
      revision: 'r1',
      backends: s.backends.map((b) => ({ ...b, health: 'healthy' as const, healthReason: 'connected' })),
    }));
    const first = nextServices(new Map(), { kind: 'snapshot', upserts: base, deletes: [] });
    expect([...first.keys()]).toEqual(['default/web']);
    const health = remoteHealthOf(first.values());
    expect(health.get(healthKey('default/web', { address: '10.0.1.11', port: null }))).toEqual({
      state: 'healthy',
      reason: 'connected',
    });
    expect(nextServices(first, { kind: 'delta', upserts: [], deletes: ['default/web'] }).size).toBe(0);
  });
});

describe('NodeAgent', () => {
  let server: Server | undefined;
  let scheduler: HealthScheduler | undefined;
  afterEach(async () => {
    await scheduler?.stop();
    server?.close();
    server = undefined;
  });

  function makeAgent(sink: DataplaneSink) {
    scheduler = new HealthScheduler({ probers: defaultProbers(), logger: log });
    const metrics = new AgentMetrics(new Registry(), { processMetrics: false });
    // Like the controller's assignment: this node probes its own backends only.
    const agent = new NodeAgent({
      node: 'node-a',
      sink,
      health: scheduler,
      log,
      metrics,
      owns: (_, b) => b.node === 'node-a',
    });
    return { agent, metrics };
  }

  it('ACKs what fits, NACKs a capacity overflow with the reason and keeps the last good state', async () => {
    const settings = resolveLbSettings({ maxServices: 2 });
    const writer = createMemoryDatapathWriter({ settings });
    const datapath = new SocketLbDatapath(writer, settings);
    const sink = new SocketLbSink(datapath, undefined as never, '/unused');
    const { agent, metrics } = makeAgent(sink);

    expect(await agent.applyCatalog({ version: 1n, catalog: services(2) })).toEqual({ ok: true });
    expect(writer.state.services.size).toBe(2);
    const nack = await agent.applyCatalog({ version: 2n, catalog: services(3) });
    expect(nack.ok).toBe(false);
    expect(!nack.ok && nack.reason).toContain('lb.maxServices');
    expect(writer.state.services.size).toBe(2);
    expect(agent.appliedVersion).toBe(1n);
    expect(agent.currentCatalog?.services.map((s) => s.name)).toEqual(['s0', 's1']);
    expect(await agent.applyCatalog({ version: 3n, catalog: services(1) })).toEqual({ ok: true });
    expect(writer.state.services.size).toBe(1);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/sluice_catalog_updates_total\{result="nack"\} 1/);
    await agent.stop();
  });

  it('hands plan listeners the services as they are once an incremental write has landed', async () => {
    const sink = new MemorySink();
    const seen: string[][] = [];
    const { agent } = makeAgent(
      afterEachPlan(sink, (planned) => seen.push(planned.map((p) => `${p.vip}:${p.port}`))),
    );
    expect(await agent.applyCatalog({ version: 1n, catalog: services(2) })).toEqual({ ok: true });
    expect(await agent.applyCatalog({ version: 2n, catalog: services(3) })).toEqual({ ok: true });
    expect(await agent.applyCatalog({ version: 3n, catalog: services(1) })).toEqual({ ok: true });
    // The second and third writes are incremental (update): the listener sees each one's result.
    expect(sink.updates).toBe(2);
    expect(seen).toEqual([
      ['10.96.1.1:80', '10.96.1.2:80'],
      ['10.96.1.1:80', '10.96.1.2:80', '10.96.1.3:80'],
      ['10.96.1.1:80'],
    ]);
    await agent.stop();
  });

  it('takes a backend out of selection as soon as its probes cross the threshold', async () => {
    server = createServer((s) => s.end());
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const sink = new MemorySink();
    const { agent } = makeAgent(sink);
    const catalog = webCatalog(
      '    healthCheck: { protocol: tcp, interval: 100ms, timeout: 100ms, healthyThreshold: 1, unhealthyThreshold: 2 }',
      `      - { address: 127.0.0.1, port: ${port}, weight: 1, node: node-a }\n      - { address: 127.0.0.2, port: ${port}, weight: 1, node: node-b }`,
    );
    agent.start();
    expect(await agent.applyCatalog({ version: 1n, catalog })).toEqual({ ok: true });
    const active = () =>
      sink
        .services()
        .find((s) => s.vip === '10.96.0.10')
        ?.backends.filter((b) => !b.draining)
        .map((b) => b.address);
    const until = async (want: string[]) => {
      const deadline = Date.now() + 5000;
      while (JSON.stringify(active()) !== JSON.stringify(want) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      return active();
    };
    // Healthy: PreferNode keeps the node-local one only.
    expect(await until(['127.0.0.1'])).toEqual(['127.0.0.1']);
    const applies = sink.applies;
    server.close();
    // Two failed probes 100 ms apart: node-a's backend leaves, node-b's (unprobed, unknown) takes over.
    expect(await until(['127.0.0.2'])).toEqual(['127.0.0.2']);
    expect(sink.applies).toBeGreaterThan(applies);
    await agent.stop();
  });
});
