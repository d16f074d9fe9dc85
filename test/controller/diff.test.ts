import { describe, expect, test } from 'vitest';
import YAML from 'yaml';
import { backoffDelay, DEFAULT_BACKOFF } from '../../controller/agent-client';
import { type Catalog, parseCatalog } from '../../controller/catalog';
import { coalesceDeltas, diffCatalogs, type VersionedDelta } from '../../controller/diff';
import { AgentQueue } from '../../controller/queue';
import { hash32, rendezvousOwners } from '../../controller/rendezvous';

function catalog(services: { name: string; vip: string; weight?: number; namespace?: string }[]): Catalog {
  const text = YAML.stringify({
    services: services.map((s) => ({
      name: s.name,
      namespace: s.namespace ?? 'default',
      vip: s.vip,
      ports: [{ port: 80 }],
      backends: [{ address: '10.0.0.1', weight: s.weight ?? 1 }],
    })),
  });
  const result = parseCatalog(text, 'x');
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.catalog;
}

type S = { key: string; v: number };
const delta = (
  baseVersion: number,
  version: number,
  upserts: S[],
  deletes: string[] = [],
): VersionedDelta<S> => ({
  baseVersion,
  version,
  upserts,
  deletes,
});

describe('diffCatalogs', () => {
  const a = catalog([
    { name: 'a', vip: '10.96.0.1' },
    { name: 'b', vip: '10.96.0.2' },
    { name: 'c', vip: '10.96.0.3' },
  ]);

  test('from nothing: every service is an upsert', () => {
    const d = diffCatalogs(null, a);
    expect(d.upserts.map((s) => s.key)).toEqual(['default/a', 'default/b', 'default/c']);
    expect(d.deletes).toEqual([]);
  });

  test('identical content parsed twice: no change', () => {
    const again = catalog([
      { name: 'a', vip: '10.96.0.1' },
      { name: 'b', vip: '10.96.0.2' },
      { name: 'c', vip: '10.96.0.3' },
    ]);
    expect(diffCatalogs(a, again)).toEqual({ upserts: [], deletes: [] });
  });

  test('reordering is not a change', () => {
    const reordered = catalog([
      { name: 'c', vip: '10.96.0.3' },
      { name: 'a', vip: '10.96.0.1' },
      { name: 'b', vip: '10.96.0.2' },
    ]);
    expect(diffCatalogs(a, reordered)).toEqual({ upserts: [], deletes: [] });
  });

  test('a changed weight, an added and a removed service', () => {
    const next = catalog([
      { name: 'a', vip: '10.96.0.1' },
      { name: 'b', vip: '10.96.0.2', weight: 5 },
      { name: 'd', vip: '10.96.0.4' },
    ]);
    const d = diffCatalogs(a, next);
    expect(d.upserts.map((s) => s.key)).toEqual(['default/b', 'default/d']);
    expect(d.upserts[0]?.backends[0]?.weight).toBe(5);
    expect(d.deletes).toEqual(['default/c']);
  });

  test('the same services in the same order, mostly the same objects: only the changed one', () => {
    const b5 = catalog([{ name: 'b', vip: '10.96.0.2', weight: 5 }]).services[0]!;
    const next: Catalog = { domain: a.domain, services: [a.services[0]!, b5, a.services[2]!] };
    expect(diffCatalogs(a, next)).toEqual({ upserts: [b5], deletes: [] });
    // A swap of two services at the same positions is neither a change nor a removal.
    const swapped: Catalog = { domain: a.domain, services: [a.services[1]!, a.services[0]!, a.services[2]!] };
    expect(diffCatalogs(a, swapped)).toEqual({ upserts: [], deletes: [] });
  });

  test('the same name in another namespace is another service', () => {
    const next = catalog([
      { name: 'a', vip: '10.96.0.1', namespace: 'prod' },
      { name: 'b', vip: '10.96.0.2' },
      { name: 'c', vip: '10.96.0.3' },
    ]);
    const d = diffCatalogs(a, next);
    expect(d.upserts.map((s) => s.key)).toEqual(['prod/a']);
    expect(d.deletes).toEqual(['default/a']);
  });
});

describe('coalesceDeltas', () => {
  test('later changes to a service supersede earlier ones', () => {
    const merged = coalesceDeltas(
      delta(3, 4, [
        { key: 'x', v: 4 },
        { key: 'y', v: 4 },
      ]),
      delta(4, 5, [{ key: 'x', v: 5 }]),
    );
    expect(merged).toEqual({
      baseVersion: 3,
      version: 5,
      upserts: [
        { key: 'y', v: 4 },
        { key: 'x', v: 5 },
      ],
      deletes: [],
    });
  });

  test('upsert then delete is a delete; delete then upsert is an upsert', () => {
    const merged = coalesceDeltas(
      delta(1, 2, [{ key: 'x', v: 2 }], ['y']),
      delta(2, 3, [{ key: 'y', v: 3 }], ['x']),
    );
    expect(merged.upserts).toEqual([{ key: 'y', v: 3 }]);
    expect(merged.deletes).toEqual(['x']);
  });

  test('refuses deltas that do not chain', () => {
    expect(() => coalesceDeltas(delta(1, 2, []), delta(3, 4, []))).toThrow(
      'cannot coalesce delta 3->4 after 1->2',
    );
  });

  test('coalescing a chain equals applying it step by step', () => {
    const steps = [
      delta(0, 1, [{ key: 'a', v: 1 }]),
      delta(1, 2, [{ key: 'b', v: 2 }], ['a']),
      delta(2, 3, [{ key: 'a', v: 3 }]),
      delta(3, 4, [{ key: 'b', v: 4 }], ['c']),
    ];
    const state = new Map<string, number>([['c', 0]]);
    for (const d of steps) {
      for (const k of d.deletes) state.delete(k);
      for (const s of d.upserts) state.set(s.key, s.v);
    }
    const merged = steps.reduce((acc, d) => coalesceDeltas(acc, d));
    const viaMerged = new Map<string, number>([['c', 0]]);
    for (const k of merged.deletes) viaMerged.delete(k);
    for (const s of merged.upserts) viaMerged.set(s.key, s.v);
    expect(viaMerged).toEqual(state);
    expect(merged.baseVersion).toBe(0);
    expect(merged.version).toBe(4);
  });
});

describe('AgentQueue', () => {
  test('holds one coalesced delta', () => {
    const q = new AgentQueue<S>(10);
    q.push(delta(1, 2, [{ key: 'x', v: 2 }]));
    q.push(delta(2, 3, [{ key: 'x', v: 3 }]));
    q.push(delta(3, 4, [{ key: 'y', v: 4 }]));
    expect(q.coalesced).toBe(2);
    const item = q.take();
    expect(item).toEqual({
      kind: 'delta',
      delta: delta(1, 4, [
        { key: 'x', v: 3 },
        { key: 'y', v: 4 },
      ]),
    });
    expect(q.take()).toBeNull();
  });

  test('overflows into a snapshot request, which absorbs later deltas', () => {
    const q = new AgentQueue<S>(2);
    q.push(delta(1, 2, [{ key: 'a', v: 2 }]));
    q.push(delta(2, 3, [{ key: 'b', v: 3 }]));
    expect(q.pending?.kind).toBe('delta');
    q.push(delta(3, 4, [{ key: 'c', v: 4 }]));
    expect(q.pending).toEqual({ kind: 'snapshot' });
    expect(q.overflows).toBe(1);
    q.push(delta(4, 5, [{ key: 'd', v: 5 }]));
    expect(q.take()).toEqual({ kind: 'snapshot' });
  });
});

describe('rendezvousOwners', () => {
  const nodes = Array.from({ length: 20 }, (_, i) => `node-${i}`);
  const items = Array.from({ length: 2000 }, (_, i) => `default/svc-${i}|192.0.2.${i % 250}:${i}`);

  test('is deterministic and independent of candidate order', () => {
    for (const item of items.slice(0, 50)) {
      expect(rendezvousOwners(item, nodes, 2)).toEqual(rendezvousOwners(item, [...nodes].reverse(), 2));
    }
  });

  test('gives two distinct owners, spread evenly', () => {
    const load = new Map<string, number>();
    for (const item of items) {
      const owners = rendezvousOwners(item, nodes, 2);
      expect(new Set(owners).size).toBe(2);
      for (const o of owners) load.set(o, (load.get(o) ?? 0) + 1);
    }
    const expected = (items.length * 2) / nodes.length;
    for (const n of nodes) {
      expect(load.get(n)).toBeGreaterThan(expected * 0.7);
      expect(load.get(n)).toBeLessThan(expected * 1.3);
    }
  });

  test('when a node leaves, only the items it owned move', () => {
    const before = new Map(items.map((i) => [i, rendezvousOwners(i, nodes, 2)]));
    const remaining = nodes.filter((n) => n !== 'node-7');
    let moved = 0;
    for (const item of items) {
      const old = before.get(item)!;
      const now = rendezvousOwners(item, remaining, 2);
      if (!old.includes('node-7')) expect(now).toEqual(old);
      else {
        moved++;
        // The surviving owner stays; one new owner is added.
        for (const o of old.filter((n) => n !== 'node-7')) expect(now).toContain(o);
      }
    }
    expect(moved).toBeGreaterThan(0);
  });

  test('fewer candidates than owners wanted', () => {
    expect(rendezvousOwners('x', ['only'], 2)).toEqual(['only']);
    expect(rendezvousOwners('x', [], 2)).toEqual([]);
  });

  test('hash32 mixes', () => {
    expect(hash32('a')).not.toBe(hash32('b'));
    expect(hash32('node-1')).toBe(hash32('node-1'));
  });
});

describe('backoffDelay', () => {
  test('grows exponentially up to the cap, jitter only shortens', () => {
    const o = { ...DEFAULT_BACKOFF, initialMs: 100, maxMs: 1000, jitter: 0.5 };
    expect([0, 1, 2, 3, 4, 5].map((a) => backoffDelay(a, o, 0))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelay(2, o, 1)).toBe(200);
    expect(backoffDelay(2, o, 0.5)).toBe(300);
  });
});
