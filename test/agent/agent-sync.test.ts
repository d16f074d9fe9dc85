/**
 * The agent's incremental sync: the pure dirty-set and change helpers (agent/agent-sync.ts), and
 * equivalence with a full recompute over random sequences of catalog, health and ejection changes —
 * first at the plan level, then through two real agents over the real socket-LB writer on in-memory maps
 * (one writing incrementally, one applying everything each time), comparing what the maps hold.
 */
import { createServer } from 'node:net';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import {
  datapathChange,
  dirtyServices,
  programmedKey,
  remoteHealthChanges,
  sameValue,
  serviceOfHealthKey,
} from '../../agent/agent-sync';
import { SocketLbDatapath } from '../../agent/datapath/datapath';
import { resolveLbSettings } from '../../agent/datapath/settings';
import { restoreState } from '../../agent/datapath/writer';
import { createMemoryDatapathWriter, type MemoryDatapathWriter } from '../../agent/datapath/writer-memory';
import { SocketLbSink } from '../../agent/datapath-bpf';
import { MemorySink } from '../../agent/datapath-sink';
import { defaultProbers } from '../../agent/health/probers';
import { HealthScheduler } from '../../agent/health/scheduler';
import type { BackendHealth } from '../../agent/locality';
import { AgentMetrics } from '../../agent/metrics';
import {
  type DataplaneSink,
  healthKey,
  NodeAgent,
  type ProgrammedService,
  planService,
  planServices,
  type RemoteHealth,
} from '../../agent/node-agent';
import { type Catalog, parseCatalog } from '../../controller/catalog';

const log = pino({ level: 'silent' });

function parse(object: object): Catalog {
  const result = parseCatalog(JSON.stringify(object), 'test.json');
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.catalog;
}

/** mulberry32: a seeded PRNG, so a failing sequence can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface SpecBackend {
  address: string;
  weight: number;
  node: string;
  zone: string;
  port?: number;
}
interface SpecService {
  name: string;
  vip: string[];
  ports: { name: string; port: number; targetPort: number; protocol: 'TCP' | 'UDP' }[];
  trafficDistribution: 'any' | 'PreferNode' | 'PreferZone';
  algorithm: 'random' | 'weighted' | 'round-robin';
  backends: SpecBackend[];
}

/** A random catalog model and random changes to it (each change keeps it valid). */
class Model {
  services: SpecService[] = [];
  private serial = 0;
  constructor(private readonly r: () => number) {
    for (let i = 0; i < 12; i++) this.addService();
  }
  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)]!;
  }
  private backend(): SpecBackend {
    const n = this.serial++;
    const v6 = this.r() < 0.2;
    return {
      address: v6 ? `fd00::${(n + 1).toString(16)}` : `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`,
      weight: this.pick([0, 1, 1, 2, 3]),
      node: this.pick(['node-a', 'node-b', 'node-c']),
      zone: this.pick(['z1', 'z2']),
      ...(this.r() < 0.2 ? { port: 9000 + (n % 100) } : {}),
    };
  }
  addService(): void {
    const n = this.serial++;
    this.services.push({
      name: `s${n}`,
      vip:
        this.r() < 0.3
          ? [`10.96.${(n >> 8) & 255}.${n & 255}`, `fd00:96::${n.toString(16)}`]
          : [`10.96.${(n >> 8) & 255}.${n & 255}`],
      ports:
        this.r() < 0.3
          ? [
              { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' },
              { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' },
            ]
          : [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
      trafficDistribution: this.pick(['any', 'PreferNode', 'PreferZone'] as const),
      algorithm: this.pick(['random', 'weighted', 'round-robin'] as const),
      backends: Array.from({ length: 1 + Math.floor(this.r() * 4) }, () => this.backend()),
    });
  }
  /** One random catalog change. */
  change(): void {
    const roll = this.r();
    if (roll < 0.1 && this.services.length < 20) {
      this.addService();
      return;
    }
    if (roll < 0.2 && this.services.length > 2) {
      this.services.splice(Math.floor(this.r() * this.services.length), 1);
      return;
    }
    const s = this.pick(this.services);
    const which = this.r();
    if (which < 0.3) {
      const b = this.pick(s.backends);
      b.weight = this.pick([0, 1, 2, 5]);
    } else if (which < 0.45) s.backends.push(this.backend());
    else if (which < 0.6 && s.backends.length > 1)
      s.backends.splice(Math.floor(this.r() * s.backends.length), 1);
    else if (which < 0.7) this.pick(s.backends).node = this.pick(['node-a', 'node-b', 'node-c']);
    else if (which < 0.8) s.trafficDistribution = this.pick(['any', 'PreferNode', 'PreferZone'] as const);
    else if (which < 0.9) s.algorithm = this.pick(['random', 'weighted', 'round-robin'] as const);
    else
      s.ports =
        s.ports.length > 1
          ? [s.ports[0]!]
          : [...s.ports, { name: 'https', port: 443, targetPort: 8443, protocol: 'TCP' }];
  }
  catalog(): Catalog {
    return parse({
      domain: 'mesh.local',
      services: this.services.map((s) => ({ ...s, namespace: 'default' })),
    });
  }
  /** A random backend key (healthKey) of the current catalog. */
  anyBackendKey(catalog: Catalog): string {
    const s = this.pick(catalog.services);
    return healthKey(s.key, this.pick(s.backends));
  }
}

const sorted = (services: readonly ProgrammedService[]) =>
  [...services].sort((a, b) => (programmedKey(a) < programmedKey(b) ? -1 : 1));

describe('agent-sync helpers', () => {
  const base = parse({
    domain: 'mesh.local',
    services: [
      {
        name: 'a',
        namespace: 'default',
        vip: '10.96.0.1',
        ports: [{ port: 80 }],
        backends: [{ address: '10.0.0.1' }],
      },
      {
        name: 'b',
        namespace: 'default',
        vip: '10.96.0.2',
        ports: [{ port: 80 }],
        backends: [{ address: '10.0.0.2' }, { address: '10.0.0.22' }],
      },
    ],
  });

  it('dirtyServices: everything without a previous catalog; then changed, touched, new and removed', () => {
    expect(dirtyServices({ previous: undefined, next: base }).replan.map((s) => s.key)).toEqual([
      'default/a',
      'default/b',
    ]);
    // An equal catalog parsed again (new objects): nothing to do.
    const again = parse({
      domain: 'mesh.local',
      services: [
        {
          name: 'a',
          namespace: 'default',
          vip: '10.96.0.1',
          ports: [{ port: 80 }],
          backends: [{ address: '10.0.0.1' }],
        },
        {
          name: 'b',
          namespace: 'default',
          vip: '10.96.0.2',
          ports: [{ port: 80 }],
          backends: [{ address: '10.0.0.2' }, { address: '10.0.0.22' }],
        },
      ],
    });
    expect(dirtyServices({ previous: base, next: again })).toEqual({ replan: [], removed: [] });
    expect(
      dirtyServices({ previous: base, next: again, touched: ['default/b', 'default/gone'] }).replan.map(
        (s) => s.key,
      ),
    ).toEqual(['default/b']);
    const changed = parse({
      domain: 'mesh.local',
      services: [
        {
          name: 'a',
          namespace: 'default',
          vip: '10.96.0.1',
          ports: [{ port: 80 }],
          backends: [{ address: '10.0.0.1', weight: 2 }],
        },
        {
          name: 'c',
          namespace: 'default',
          vip: '10.96.0.3',
          ports: [{ port: 80 }],
          backends: [{ address: '10.0.0.3' }],
        },
      ],
    });
    const dirty = dirtyServices({ previous: base, next: changed });
    expect(dirty.replan.map((s) => s.key)).toEqual(['default/a', 'default/c']);
    expect(dirty.removed).toEqual(['default/b']);
  });

  it('sameValue: equal plain data, different in any value, length, key or shape', () => {
    const v = { a: [1, { b: 'x', c: null }], d: { e: true } };
    expect(sameValue(v, JSON.parse(JSON.stringify(v)))).toBe(true);
    expect(sameValue(v, { a: [1, { b: 'y', c: null }], d: { e: true } })).toBe(false);
    expect(sameValue(v, { a: [1, { b: 'x', c: null }, 2], d: { e: true } })).toBe(false);
    expect(sameValue(v, { a: [1, { b: 'x', c: null }], d: { e: true }, f: 1 })).toBe(false);
    expect(sameValue({ a: undefined }, { b: undefined })).toBe(false);
    expect(sameValue([1, 2], { 0: 1, 1: 2 })).toBe(false);
    expect(sameValue(null, {})).toBe(false);
    expect(sameValue(0, '0')).toBe(false);
  });

  it('remoteHealthChanges: services whose backends changed state, appeared or disappeared', () => {
    const before: RemoteHealth = new Map([
      ['default/a|10.0.0.1:0', { state: 'healthy' as BackendHealth, reason: '' }],
      ['default/b|10.0.0.2:0', { state: 'healthy' as BackendHealth, reason: '' }],
    ]);
    const after: RemoteHealth = new Map([
      ['default/a|10.0.0.1:0', { state: 'healthy' as BackendHealth, reason: 'other reason' }],
      ['default/c|10.0.0.3:0', { state: 'unhealthy' as BackendHealth, reason: '' }],
    ]);
    expect([...remoteHealthChanges(before, after)].sort()).toEqual(['default/b', 'default/c']);
    expect(remoteHealthChanges(before, before).size).toBe(0);
    expect(serviceOfHealthKey('default/a|[fd00::1]:80')).toBe('default/a');
  });

  it('datapathChange: upserts what differs, removes what nobody programs any more', () => {
    const ctx = { node: 'node-a', health: () => 'healthy' as const, ejected: () => false };
    const [a, b] = base.services.map((s) => planService(s, ctx).services);
    const programmed = new Map([
      ['default/a', a!],
      ['default/b', b!],
    ]);
    // Re-planned to the same entries: nothing to write.
    expect(
      datapathChange(programmed, new Map([['default/a', planService(base.services[0]!, ctx).services]]), []),
    ).toEqual({
      upsert: [],
      remove: [],
    });
    // b unhealthy: its entry changes (draining), a stays.
    const sick = planService(base.services[1]!, {
      ...ctx,
      health: (_: string, be: { address: string }) => (be.address === '10.0.0.2' ? 'unhealthy' : 'healthy'),
    }).services;
    expect(sick[0]?.backends.map((x) => x.draining)).toEqual([true, false]);
    expect(datapathChange(programmed, new Map([['default/b', sick]]), [])).toEqual({
      upsert: sick,
      remove: [],
    });
    // b removed; its VIP moves to a (replanned with b's VIP): an upsert, not a removal.
    expect(datapathChange(programmed, new Map(), ['default/b'])).toEqual({
      upsert: [],
      remove: [{ vip: '10.96.0.2', port: 80, protocol: 'TCP' }],
    });
    const moved = b!.map((e) => ({ ...e, service: 'default/a' }));
    expect(datapathChange(programmed, new Map([['default/a', moved]]), ['default/b'])).toEqual({
      upsert: moved,
      remove: [{ vip: '10.96.0.1', port: 80, protocol: 'TCP' }],
    });
  });
});

describe('incremental sync equals a full recompute', () => {
  it('plan level: 30 seeds × 40 random catalog, health and ejection changes', () => {
    for (let seed = 1; seed <= 30; seed++) {
      const r = rng(seed);
      const model = new Model(r);
      const health = new Map<string, BackendHealth>();
      const ejected = new Set<string>();
      const ctx = {
        node: 'node-a',
        zone: 'z1',
        health: (s: string, b: Parameters<typeof healthKey>[1]) => health.get(healthKey(s, b)) ?? 'unknown',
        ejected: (s: string, b: Parameters<typeof healthKey>[1]) => ejected.has(healthKey(s, b)),
      };
      let catalog = model.catalog();
      const programmed = new Map<string, readonly ProgrammedService[]>();
      const state = new Map<string, ProgrammedService>();
      let previous: Catalog | undefined;
      let touched = new Set<string>();
      for (let step = 0; step < 40; step++) {
        const dirty = dirtyServices({ previous, next: catalog, touched });
        const replanned = new Map(dirty.replan.map((s) => [s.key, planService(s, ctx).services]));
        const change = datapathChange(programmed, replanned, dirty.removed);
        for (const ref of change.remove) state.delete(programmedKey(ref));
        for (const s of change.upsert) state.set(programmedKey(s), s);
        for (const key of dirty.removed) programmed.delete(key);
        for (const [key, entries] of replanned) programmed.set(key, entries);
        previous = catalog;
        touched = new Set();
        expect(sorted([...state.values()]), `seed ${seed} step ${step}`).toEqual(
          sorted(planServices({ catalog, ...ctx }).services),
        );
        // Next change: catalog, health or ejection.
        const roll = r();
        if (roll < 0.4) {
          model.change();
          catalog = model.catalog();
        } else if (roll < 0.8) {
          const key = model.anyBackendKey(catalog);
          health.set(key, (['healthy', 'unhealthy', 'unknown'] as const)[Math.floor(r() * 3)]!);
          touched.add(serviceOfHealthKey(key));
        } else {
          const key = model.anyBackendKey(catalog);
          if (ejected.has(key)) ejected.delete(key);
          else ejected.add(key);
          touched.add(serviceOfHealthKey(key));
        }
      }
    }
  });

  /** What the maps hold, without ids: per service its config, members and table by member identity. */
  function mapContents(writer: MemoryDatapathWriter) {
    const state = restoreState(writer.maps);
    const out: Record<string, unknown> = {};
    for (const [key, s] of state.services) {
      const byId = new Map([...s.members.values()].map((m) => [m.id, m.identity]));
      out[key] = {
        config: s.config,
        members: [...s.members.values()]
          .map((m) => `${m.identity} w${m.weight} s${m.state} f${m.flags}`)
          .sort(),
        slots: s.slots.map((id) => byId.get(id)),
        active: s.activeIds.map((id) => byId.get(id)),
      };
    }
    return out;
  }

  it('agent level: an incremental agent and a full-apply agent leave the same maps (random versions)', async () => {
    const settings = resolveLbSettings({});
    const make = (incremental: boolean) => {
      const writer = createMemoryDatapathWriter({ settings });
      const lb = new SocketLbSink(new SocketLbDatapath(writer, settings), undefined as never, '/unused');
      const sink: DataplaneSink = incremental ? lb : { apply: (s) => lb.apply(s), readStatus: () => [] };
      const scheduler = new HealthScheduler({ probers: defaultProbers(), logger: log });
      const agent = new NodeAgent({
        node: 'node-a',
        zone: 'z1',
        sink,
        health: scheduler,
        log,
        metrics: new AgentMetrics(new Registry(), { processMetrics: false }),
      });
      return { agent, writer, scheduler };
    };
    for (let seed = 100; seed < 106; seed++) {
      const r = rng(seed);
      const model = new Model(r);
      const inc = make(true);
      const full = make(false);
      const remote = new Map<string, { state: BackendHealth; reason: string }>();
      for (let version = 1n; version <= 25n; version++) {
        const catalog = model.catalog();
        const update = { version, catalog, health: new Map(remote) };
        expect(await inc.agent.applyCatalog(update)).toEqual({ ok: true });
        expect(await full.agent.applyCatalog(update)).toEqual({ ok: true });
        expect(mapContents(inc.writer), `seed ${seed} version ${version}`).toEqual(mapContents(full.writer));
        if (r() < 0.5) model.change();
        for (let i = 0; i < 3; i++) {
          const key = model.anyBackendKey(catalog);
          remote.set(key, {
            state: (['healthy', 'unhealthy', 'unknown'] as const)[Math.floor(r() * 3)]!,
            reason: '',
          });
        }
      }
      await inc.agent.stop();
      await full.agent.stop();
    }
  });

  it('a health change that does not change the plan writes nothing; reconcile() writes everything', async () => {
    const sink = new MemorySink();
    const scheduler = new HealthScheduler({ probers: defaultProbers(), logger: log });
    const agent = new NodeAgent({
      node: 'node-a',
      sink,
      health: scheduler,
      log,
      metrics: new AgentMetrics(new Registry(), { processMetrics: false }),
    });
    const catalog = new Model(rng(7)).catalog();
    await agent.applyCatalog({ version: 1n, catalog });
    expect([sink.applies, sink.updates]).toEqual([1, 0]);
    const before = sorted(sink.services());
    // The same catalog again (parsed anew): no write at all.
    await agent.applyCatalog({ version: 2n, catalog: new Model(rng(7)).catalog() });
    expect([sink.applies, sink.updates]).toEqual([1, 0]);
    // One backend's remote health turns unhealthy: one incremental write touching one service.
    const s = catalog.services.find((x) => x.backends.some((b) => b.weight > 0))!;
    const b = s.backends.find((x) => x.weight > 0)!;
    await agent.applyCatalog({
      version: 3n,
      catalog,
      health: new Map([[healthKey(s.key, b), { state: 'unhealthy' as const, reason: 'test' }]]),
    });
    expect([sink.applies, sink.updates]).toEqual([2, 1]);
    const after = sorted(sink.services());
    const changed = after.filter((x, i) => JSON.stringify(x) !== JSON.stringify(before[i]));
    expect(changed.length).toBeGreaterThan(0);
    expect(new Set(changed.map((x) => x.service))).toEqual(new Set([s.key]));
    await agent.reconcile();
    expect([sink.applies, sink.updates]).toEqual([3, 1]);
    expect(sorted(sink.services())).toEqual(after);
    await agent.stop();
  });
});

describe('incremental writes forget what left the catalog', () => {
  it("drops a removed backend's health metric and state, keeps the other services'", async () => {
    const server = createServer((s) => s.end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const scheduler = new HealthScheduler({ probers: defaultProbers(), logger: log });
    const metrics = new AgentMetrics(new Registry(), { processMetrics: false });
    const sink = new MemorySink();
    const agent = new NodeAgent({ node: 'node-a', sink, health: scheduler, log, metrics });
    const check = { protocol: 'tcp', interval: '100ms', timeout: '100ms', healthyThreshold: 1 };
    const service = (name: string, vip: string, addresses: string[]) => ({
      name,
      namespace: 'default',
      vip,
      ports: [{ port: 80, targetPort: port }],
      healthCheck: check,
      backends: addresses.map((address) => ({ address, node: 'node-a' })),
    });
    const v1 = parse({
      domain: 'mesh.local',
      services: [
        service('a', '10.96.0.1', ['127.0.0.1', '127.0.0.2']),
        service('b', '10.96.0.2', ['127.0.0.3']),
      ],
    });
    try {
      agent.start();
      expect(await agent.applyCatalog({ version: 1n, catalog: v1 })).toEqual({ ok: true });
      const healthLines = async () =>
        (await metrics.registry.metrics()).split('\n').filter((l) => l.startsWith('sluice_backend_health{'));
      const deadline = Date.now() + 5000;
      while ((await healthLines()).length < 3 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      expect((await healthLines()).length).toBe(3);
      // v2: a loses 127.0.0.2; b is the same object (as the controller link keeps it).
      const v2: Catalog = {
        ...v1,
        services: [{ ...v1.services[0]!, backends: [v1.services[0]!.backends[0]!] }, v1.services[1]!],
      };
      const updates = sink.updates;
      expect(await agent.applyCatalog({ version: 2n, catalog: v2 })).toEqual({ ok: true });
      expect(sink.updates).toBe(updates + 1);
      const lines = await healthLines();
      expect(lines.some((l) => l.includes('127.0.0.2'))).toBe(false);
      expect(lines.some((l) => l.includes('127.0.0.1'))).toBe(true);
      expect(lines.some((l) => l.includes('127.0.0.3'))).toBe(true);
    } finally {
      await agent.stop();
      server.close();
    }
  });
});
