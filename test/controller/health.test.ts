import { describe, expect, test } from 'vitest';
import YAML from 'yaml';
import { parseCatalog } from '../../controller/catalog';
import type { Clock } from '../../controller/clock';
import { backendKey, HealthAggregator } from '../../controller/health';
import type { WireBackendRef } from '../../controller/protocol';
import { rendezvousOwners } from '../../controller/rendezvous';

/** A clock the test advances by hand; timers fire in order when their time comes. */
class ManualClock implements Clock {
  private t = 0;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private nextId = 1;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== handle);
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
}

function catalog(externals: number, options: { weight?: number; withA?: boolean } = {}) {
  const text = YAML.stringify({
    services: [
      {
        name: 'web',
        vip: '10.96.0.10',
        ports: [{ port: 80 }],
        healthCheck: { protocol: 'tcp', interval: '1s', timeout: '500ms' },
        backends: [
          ...(options.withA === false
            ? []
            : [{ address: '10.0.1.1', node: 'node-a', weight: options.weight ?? 1 }]),
          { address: '10.0.1.2', node: 'node-b' },
          ...Array.from({ length: externals }, (_, i) => ({ address: `192.0.2.${i + 1}` })),
        ],
      },
      {
        name: 'unchecked',
        vip: '10.96.0.11',
        ports: [{ port: 80 }],
        backends: [{ address: '10.0.9.9', node: 'node-a' }],
      },
    ],
  });
  const r = parseCatalog(text, 'x');
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.catalog;
}

function setup(externals = 3, graceMs = 1000) {
  const clock = new ManualClock();
  const changes: string[][] = [];
  const assignments = new Map<string, readonly WireBackendRef[]>();
  const h = new HealthAggregator({
    clock,
    graceMs,
    onChange: (keys) => changes.push([...keys]),
    onAssignment: (node, refs) => assignments.set(node, refs),
  });
  h.setCatalog(catalog(externals));
  return { clock, h, changes, assignments };
}

const web = (address: string) => backendKey('default/web', { address, port: null });

describe('HealthAggregator', () => {
  test('incremental ownership always equals rendezvous over the connected agents', () => {
    const { h } = setup(40);
    const connected: string[] = [];
    const steps = ['+n1', '+n2', '+n3', '+n4', '-n2', '+n5', '+n6', '-n1', '-n5', '+n2', '+n7', '-n3', '-n4'];
    for (const step of steps) {
      const node = step.slice(1);
      if (step[0] === '+') {
        connected.push(node);
        h.agentConnected(node);
      } else {
        connected.splice(connected.indexOf(node), 1);
        h.agentDisconnected(node);
      }
      for (let i = 1; i <= 40; i++) {
        const key = web(`192.0.2.${i}`);
        expect(h.owners(key)).toEqual(rendezvousOwners(key, connected, 2));
      }
    }
  });

  test("node backends go to their node only; unchecked services are nobody's", () => {
    const { h, assignments } = setup(0);
    h.agentConnected('node-a');
    h.agentConnected('node-b');
    expect(assignments.get('node-a')).toEqual([{ service: 'default/web', address: '10.0.1.1', port: 0 }]);
    expect(assignments.get('node-b')).toEqual([{ service: 'default/web', address: '10.0.1.2', port: 0 }]);
    expect(h.owners(backendKey('default/unchecked', { address: '10.0.9.9', port: null }))).toEqual([]);
  });

  test('merge rules: any healthy wins, then unhealthy with every reason, else unknown', () => {
    const { h } = setup(1);
    for (const n of ['node-a', 'node-b', 'node-c']) h.agentConnected(n);
    const key = web('192.0.2.1');
    const [o1, o2] = h.owners(key) as [string, string];
    const r = (state: 'healthy' | 'unhealthy', reason = '') => [
      {
        service: 'default/web',
        address: '192.0.2.1',
        port: 0,
        state: state === 'healthy' ? ('HEALTHY' as const) : ('UNHEALTHY' as const),
        reason,
      },
    ];
    expect(h.health('default/web', { address: '192.0.2.1', port: null })).toEqual({
      state: 'unknown',
      reason: '',
    });
    expect(h.report(o1, r('unhealthy', 'timeout')).changed).toEqual(new Set(['default/web']));
    expect(h.report(o2, r('unhealthy', 'refused')).accepted).toBe(1);
    expect(h.health('default/web', { address: '192.0.2.1', port: null })).toEqual({
      state: 'unhealthy',
      reason: [`${o1}: timeout`, `${o2}: refused`].sort().join('; '),
    });
    h.report(o2, r('healthy'));
    expect(h.health('default/web', { address: '192.0.2.1', port: null }).state).toBe('healthy');
  });

  test("a departed owner's report lasts the grace period, and survives a quick return", () => {
    const { h, clock, changes } = setup(0, 1000);
    h.agentConnected('node-a');
    h.report('node-a', [
      { service: 'default/web', address: '10.0.1.1', port: 0, state: 'UNHEALTHY', reason: 'x' },
    ]);
    h.agentDisconnected('node-a');
    clock.advance(900);
    expect(h.health('default/web', { address: '10.0.1.1', port: null }).state).toBe('unhealthy');
    h.agentConnected('node-a'); // back in time: the report is its own again
    clock.advance(5000);
    expect(h.health('default/web', { address: '10.0.1.1', port: null }).state).toBe('unhealthy');
    expect(changes).toEqual([]);

    h.agentDisconnected('node-a');
    clock.advance(1000);
    expect(h.health('default/web', { address: '10.0.1.1', port: null }).state).toBe('unknown');
    expect(changes).toEqual([['default/web']]);
  });

  test('reports survive an edit of their service, and go away with their backend', () => {
    const { h } = setup(0);
    h.agentConnected('node-a');
    h.report('node-a', [
      { service: 'default/web', address: '10.0.1.1', port: 0, state: 'UNHEALTHY', reason: 'x' },
    ]);
    h.setCatalog(catalog(0, { weight: 5 }));
    expect(h.health('default/web', { address: '10.0.1.1', port: null }).state).toBe('unhealthy');
    h.setCatalog(catalog(0, { withA: false }));
    h.setCatalog(catalog(0));
    expect(h.health('default/web', { address: '10.0.1.1', port: null }).state).toBe('unknown');
  });
});
