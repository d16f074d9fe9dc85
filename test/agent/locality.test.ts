import { describe, expect, it } from 'vitest';
import { type BackendHealth, chooseBackends, isUsable, type LocalityBackend } from '../../agent/locality';

interface B extends LocalityBackend {
  id: string;
}

function b(
  id: string,
  node: string | undefined,
  zone: string | undefined,
  health: BackendHealth = 'healthy',
  extra: Partial<B> = {},
): B {
  return { id, node, zone, weight: 1, health, ...extra };
}

const ids = (backends: readonly B[]) => backends.map((x) => x.id);
const here = { node: 'node-a', zone: 'zone-1' };

describe('isUsable', () => {
  it('counts healthy and unknown, not unhealthy, ejected or weight 0', () => {
    expect(isUsable(b('x', 'n', 'z', 'healthy'))).toBe(true);
    expect(isUsable(b('x', 'n', 'z', 'unknown'))).toBe(true);
    expect(isUsable(b('x', 'n', 'z', 'unhealthy'))).toBe(false);
    expect(isUsable(b('x', 'n', 'z', 'healthy', { ejected: true }))).toBe(false);
    expect(isUsable(b('x', 'n', 'z', 'healthy', { weight: 0 }))).toBe(false);
  });
});

describe('chooseBackends', () => {
  const mixed = [
    b('a1', 'node-a', 'zone-1'),
    b('a2', 'node-a', 'zone-1'),
    b('b1', 'node-b', 'zone-1'),
    b('c1', 'node-c', 'zone-2'),
    b('ext', undefined, undefined),
  ];

  it('any: all usable backends, ignoring locality', () => {
    const choice = chooseBackends({ ...here, backends: mixed, trafficDistribution: 'any' });
    expect(ids(choice.backends)).toEqual(['a1', 'a2', 'b1', 'c1', 'ext']);
    expect(choice).toMatchObject({ tier: 'all', panic: false });
  });

  it('PreferNode: this node first', () => {
    const choice = chooseBackends({ ...here, backends: mixed, trafficDistribution: 'PreferNode' });
    expect(ids(choice.backends)).toEqual(['a1', 'a2']);
    expect(choice.tier).toBe('node');
    expect(choice.trail).toEqual(['node: 2/2 usable, chosen']);
  });

  it('PreferNode: falls through to the zone when no backend on this node is usable', () => {
    const backends = [b('a1', 'node-a', 'zone-1', 'unhealthy'), ...mixed.slice(2)];
    const choice = chooseBackends({ ...here, backends, trafficDistribution: 'PreferNode' });
    expect(ids(choice.backends)).toEqual(['b1']);
    expect(choice.tier).toBe('zone');
    expect(choice.trail).toEqual(['node: 0/1 usable, none usable', 'zone: 1/2 usable, chosen']);
  });

  it('PreferNode: falls through an empty node tier and an empty zone tier to all', () => {
    const backends = [b('c1', 'node-c', 'zone-2'), b('ext', undefined, undefined)];
    const choice = chooseBackends({ ...here, backends, trafficDistribution: 'PreferNode' });
    expect(ids(choice.backends)).toEqual(['c1', 'ext']);
    expect(choice.tier).toBe('all');
    expect(choice.trail).toEqual([
      'node: 0/0 usable, empty',
      'zone: 0/0 usable, empty',
      'all: 2/2 usable, chosen',
    ]);
  });

  it('PreferNode without a zone: node, then all', () => {
    const backends = [b('a1', 'node-a', undefined, 'unhealthy'), b('b1', 'node-b', 'zone-1')];
    const choice = chooseBackends({ node: 'node-a', backends, trafficDistribution: 'PreferNode' });
    expect(ids(choice.backends)).toEqual(['b1']);
    expect(choice.trail).toHaveLength(2);
  });

  it('PreferZone: this zone, not this node only', () => {
    const choice = chooseBackends({ ...here, backends: mixed, trafficDistribution: 'PreferZone' });
    expect(ids(choice.backends)).toEqual(['a1', 'a2', 'b1']);
    expect(choice.tier).toBe('zone');
  });

  it('PreferZone: falls through to all when the zone has no usable backend', () => {
    const backends = [
      ...mixed.map((x) => (x.zone === 'zone-1' ? { ...x, ejected: true } : x)),
      b('c2', 'node-c', 'zone-2'),
    ];
    const choice = chooseBackends({ ...here, backends, trafficDistribution: 'PreferZone' });
    expect(ids(choice.backends)).toEqual(['c1', 'ext', 'c2']);
    expect(choice).toMatchObject({ tier: 'all', panic: false });
  });

  it('PreferZone without a zone on this node behaves like any', () => {
    const choice = chooseBackends({ node: 'node-a', backends: mixed, trafficDistribution: 'PreferZone' });
    expect(choice.tier).toBe('all');
    expect(choice.backends).toHaveLength(5);
  });

  it('a tier below the panic threshold spills over to the next tier', () => {
    // node tier: 1 of 3 usable (33% < 50%): not overloaded, the zone takes the traffic.
    const backends = [
      b('a1', 'node-a', 'zone-1'),
      b('a2', 'node-a', 'zone-1', 'unhealthy'),
      b('a3', 'node-a', 'zone-1', 'unhealthy'),
      b('b1', 'node-b', 'zone-1'),
      b('b2', 'node-b', 'zone-1'),
      b('b3', 'node-b', 'zone-1'),
    ];
    const choice = chooseBackends({ ...here, backends, trafficDistribution: 'PreferNode' });
    expect(choice.tier).toBe('zone');
    expect(ids(choice.backends)).toEqual(['a1', 'b1', 'b2', 'b3']);
    expect(choice.trail[0]).toBe('node: 1/3 usable, below 50%');
  });

  it('exactly at the threshold is not panic', () => {
    const backends = [b('a1', 'node-a', 'zone-1'), b('a2', 'node-a', 'zone-1', 'unhealthy')];
    const choice = chooseBackends({ ...here, backends, trafficDistribution: 'any' });
    expect(choice).toMatchObject({ tier: 'all', panic: false });
    expect(ids(choice.backends)).toEqual(['a1']);
  });

  it('panic: the widest tier below the threshold programs all of its backends', () => {
    const backends = [
      b('a1', 'node-a', 'zone-1'),
      b('a2', 'node-a', 'zone-1', 'unhealthy'),
      b('a3', 'node-a', 'zone-1', 'unhealthy'),
      b('c1', 'node-c', 'zone-2', 'unhealthy'),
      b('d1', 'node-d', 'zone-2', 'unhealthy', { weight: 0 }),
    ];
    const choice = chooseBackends({ ...here, backends, trafficDistribution: 'PreferNode' });
    expect(choice).toMatchObject({ tier: 'all', panic: true });
    expect(ids(choice.backends)).toEqual(['a1', 'a2', 'a3', 'c1']);
    expect(choice.trail).toEqual([
      'node: 1/3 usable, below 50%',
      'zone: 1/3 usable, below 50%',
      'all: 1/4 usable, below 50%',
      'all: panic, using all 4',
    ]);
  });

  it('panic when nothing is usable at all', () => {
    const backends = [b('a1', 'node-a', 'zone-1', 'unhealthy'), b('c1', 'node-c', 'zone-2', 'unhealthy')];
    const choice = chooseBackends({ ...here, backends, trafficDistribution: 'any' });
    expect(choice).toMatchObject({ tier: 'all', panic: true });
    expect(ids(choice.backends)).toEqual(['a1', 'c1']);
  });

  it('a custom threshold moves the panic point', () => {
    const backends = [b('a1', 'n', 'z'), b('a2', 'n', 'z'), b('a3', 'n', 'z', 'unhealthy')];
    expect(chooseBackends({ ...here, backends, trafficDistribution: 'any', panicThreshold: 70 }).panic).toBe(
      true,
    );
    expect(chooseBackends({ ...here, backends, trafficDistribution: 'any', panicThreshold: 60 }).panic).toBe(
      false,
    );
  });

  it('threshold 0 disables panic: only usable backends, possibly none', () => {
    const some = [b('a1', 'n', 'z'), b('a2', 'n', 'z', 'unhealthy'), b('a3', 'n', 'z', 'unhealthy')];
    const choice = chooseBackends({ ...here, backends: some, trafficDistribution: 'any', panicThreshold: 0 });
    expect(choice).toMatchObject({ panic: false });
    expect(ids(choice.backends)).toEqual(['a1']);
    const none = [b('a2', 'n', 'z', 'unhealthy')];
    const empty = chooseBackends({ ...here, backends: none, trafficDistribution: 'any', panicThreshold: 0 });
    expect(empty).toMatchObject({ panic: false, tier: 'all', backends: [] });
  });

  it('no backends at all: nothing to program, no panic', () => {
    const choice = chooseBackends({ ...here, backends: [], trafficDistribution: 'PreferNode' });
    expect(choice).toMatchObject({ backends: [], tier: 'all', panic: false });
  });

  it('weight 0 backends are drained: never chosen and not counted', () => {
    const backends = [b('a1', 'node-a', 'zone-1', 'healthy', { weight: 0 }), b('b1', 'node-b', 'zone-1')];
    const choice = chooseBackends({ ...here, backends, trafficDistribution: 'PreferNode' });
    expect(ids(choice.backends)).toEqual(['b1']);
    expect(choice.trail[0]).toBe('node: 0/0 usable, empty');
  });

  it('rejects a threshold outside 0-100', () => {
    expect(() =>
      chooseBackends({ ...here, backends: [], trafficDistribution: 'any', panicThreshold: 101 }),
    ).toThrow(/panicThreshold: must be a percentage from 0 to 100, got 101/);
    expect(() =>
      chooseBackends({ ...here, backends: [], trafficDistribution: 'any', panicThreshold: Number.NaN }),
    ).toThrow(/panicThreshold/);
  });
});
