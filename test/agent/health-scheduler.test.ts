import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultProbers } from '../../agent/health/probers';
import { HealthScheduler, type HealthTransition, type ProbeResult } from '../../agent/health/scheduler';
import type { HealthCheckSpec, ProbeOutcome, Prober, Probers, ProbeTarget } from '../../agent/health/types';
import { FakeTime, flushMicrotasks } from './support/fake-time';
import { close, httpServer, tcpListener } from './support/servers';

const silent = pino({ level: 'silent' });

function target(key: string, check: Partial<HealthCheckSpec> = {}, port = 1): ProbeTarget {
  return {
    key,
    service: 'default/web',
    address: '127.0.0.1',
    port,
    check: {
      protocol: 'tcp',
      intervalMs: 1000,
      timeoutMs: 300,
      healthyThreshold: 2,
      unhealthyThreshold: 2,
      ...check,
    },
  };
}

/** A prober whose outcomes the test scripts per key; each probe settles after `delayMs` of fake time. */
class ScriptedProber implements Prober {
  readonly calls: string[] = [];
  readonly released: string[] = [];
  readonly aborted: string[] = [];
  active = 0;
  maxActive = 0;
  outcomes = new Map<string, ProbeOutcome>();
  constructor(
    private readonly time: FakeTime,
    public delayMs = 10,
  ) {}
  probe(t: ProbeTarget, signal: AbortSignal): Promise<ProbeOutcome> {
    this.calls.push(t.key);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    return new Promise((resolve) => {
      const timer = this.time.setTimeout(() => {
        this.active--;
        resolve(this.outcomes.get(t.key) ?? { ok: true, reason: 'connected' });
      }, this.delayMs);
      signal.addEventListener('abort', () => {
        this.time.clearTimeout(timer);
        this.active--;
        this.aborted.push(t.key);
        resolve({ ok: false, reason: 'aborted' });
      });
    });
  }
  release(t: ProbeTarget): void {
    this.released.push(t.key);
  }
}

function setup(options: { concurrency?: number; jitter?: number; delayMs?: number } = {}) {
  const time = new FakeTime();
  const prober = new ScriptedProber(time, options.delayMs);
  const probers: Probers = { tcp: prober, http: prober, grpc: prober };
  let seed = 1;
  const random = () => {
    seed = (seed * 16807) % 2147483647;
    return (seed - 1) / 2147483646;
  };
  const scheduler = new HealthScheduler({
    probers,
    logger: silent,
    clock: time,
    timers: time,
    random,
    concurrency: options.concurrency,
    jitter: options.jitter,
  });
  const transitions: HealthTransition[] = [];
  const results: ProbeResult[] = [];
  scheduler.onTransition((t) => transitions.push(t));
  scheduler.onResult((r) => results.push(r));
  return { time, prober, scheduler, transitions, results };
}

describe('HealthScheduler (logic, injected time)', () => {
  it('spreads first probes over one interval, then probes every interval ± jitter', async () => {
    const { time, prober, scheduler, results } = setup({ jitter: 0.1 });
    scheduler.setTargets(Array.from({ length: 100 }, (_, i) => target(`b${i}`)));
    await time.advance(5000);
    expect(prober.calls).toHaveLength(0); // nothing before start()
    scheduler.start();
    await time.advance(1000);
    // Every target's first probe starts within the first interval.
    expect(new Set(prober.calls).size).toBe(100);
    expect(results.length).toBeGreaterThanOrEqual(100);
    // Per target, gaps between probe starts are interval (+ probe time) ± 10%.
    const byKey = new Map<string, number[]>();
    const { scheduler: s2, time: t2, prober: p2 } = setup({ jitter: 0.1 });
    p2.probe = ((orig) =>
      function (this: ScriptedProber, t: ProbeTarget, signal: AbortSignal) {
        const list = byKey.get(t.key) ?? [];
        list.push(t2.now());
        byKey.set(t.key, list);
        return orig.call(this, t, signal);
      })(p2.probe);
    s2.setTargets(Array.from({ length: 20 }, (_, i) => target(`b${i}`)));
    s2.start();
    await t2.advance(20_000);
    const gaps = [...byKey.values()].flatMap((list) => list.slice(1).map((v, i) => v - list[i]!));
    expect(gaps.length).toBeGreaterThan(300);
    for (const gap of gaps) {
      expect(gap).toBeGreaterThanOrEqual(900 + 10);
      expect(gap).toBeLessThanOrEqual(1100 + 10);
    }
    // Jitter actually varies the gaps.
    expect(Math.max(...gaps) - Math.min(...gaps)).toBeGreaterThan(100);
    await scheduler.stop();
    await s2.stop();
  });

  it('emits transitions at the thresholds with the probe reason', async () => {
    const { time, prober, scheduler, transitions } = setup({ jitter: 0 });
    scheduler.setTargets([target('b1')]);
    scheduler.start();
    await time.advance(1000);
    expect(transitions.map((t) => [t.from, t.to, t.reason])).toEqual([['unknown', 'healthy', 'connected']]);
    prober.outcomes.set('b1', { ok: false, reason: 'connect ECONNREFUSED' });
    await time.advance(1000);
    expect(transitions).toHaveLength(1); // one failure, threshold 2
    expect(scheduler.status('b1')).toMatchObject({ state: 'healthy', consecutiveFailures: 1 });
    await time.advance(1000);
    expect(transitions.at(-1)).toMatchObject({
      from: 'healthy',
      to: 'unhealthy',
      reason: 'connect ECONNREFUSED',
    });
    expect(transitions.at(-1)!.target.key).toBe('b1');
    prober.outcomes.delete('b1');
    await time.advance(2000);
    expect(transitions.at(-1)).toMatchObject({ from: 'unhealthy', to: 'healthy', reason: 'connected' });
    expect(transitions).toHaveLength(3);
    await scheduler.stop();
  });

  it('times out a probe with a reason and frees its slot', async () => {
    const { time, prober, scheduler, results } = setup({ jitter: 0, delayMs: 5000 });
    scheduler.setTargets([target('slow', { timeoutMs: 250, unhealthyThreshold: 1 })]);
    scheduler.start();
    // The first probe starts at the seeded random offset (~0ms) and times out 250ms later; the next
    // one is due a full interval after that.
    await time.advance(1100);
    expect(results[0]?.outcome).toEqual({ ok: false, reason: 'timeout after 250ms' });
    expect(results[0]?.durationMs).toBe(250);
    expect(prober.aborted).toEqual(['slow']);
    expect(scheduler.stats().inFlight).toBe(0);
    expect(scheduler.status('slow')?.state).toBe('unhealthy');
    await scheduler.stop();
  });

  it('never runs more than `concurrency` probes at once and queues the rest in order', async () => {
    const { time, prober, scheduler } = setup({ concurrency: 5, jitter: 0, delayMs: 200 });
    scheduler.setTargets(
      Array.from({ length: 50 }, (_, i) => target(`b${i}`, { intervalMs: 100, timeoutMs: 1000 })),
    );
    scheduler.start();
    await time.advance(100);
    expect(scheduler.stats().inFlight).toBe(5);
    expect(scheduler.stats().queued).toBe(45);
    await time.advance(10_000);
    expect(prober.maxActive).toBe(5);
    // Everyone got probed repeatedly: the queue is fair.
    const counts = new Map<string, number>();
    for (const k of prober.calls) counts.set(k, (counts.get(k) ?? 0) + 1);
    expect(counts.size).toBe(50);
    expect(Math.min(...counts.values())).toBeGreaterThanOrEqual(4);
    await scheduler.stop();
  });

  it('starts at most startsPerTurn probes per event-loop turn, even when all are due at once', async () => {
    const time = new FakeTime();
    const prober = new ScriptedProber(time, 500);
    const turns: number[] = [];
    const probe = prober.probe.bind(prober);
    prober.probe = (t, signal) => {
      turns.push(time.fired);
      return probe(t, signal);
    };
    const scheduler = new HealthScheduler({
      probers: { tcp: prober, http: prober, grpc: prober },
      logger: silent,
      clock: time,
      timers: time,
      random: () => 0,
      jitter: 0,
      concurrency: 100,
      startsPerTurn: 5,
    });
    scheduler.setTargets(Array.from({ length: 40 }, (_, i) => target(`b${i}`)));
    scheduler.start();
    await time.advance(0);
    expect(prober.calls).toHaveLength(40);
    const perTurn = new Map<number, number>();
    for (const turn of turns) perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1);
    expect(Math.max(...perTurn.values())).toBe(5);
    expect(perTurn.size).toBeGreaterThanOrEqual(8);
    await scheduler.stop();
    expect(time.timerCount).toBe(0);
  });

  it('removing a target stops its probes, aborts one in flight, drops its result and releases it', async () => {
    const { time, prober, scheduler, results } = setup({ jitter: 0, delayMs: 100 });
    scheduler.setTargets([target('keep'), target('gone')]);
    scheduler.start();
    // Run until 'gone' has a probe in flight.
    for (let i = 0; i < 1000 && !(prober.calls.includes('gone') && prober.active > 0); i++)
      await time.advance(1);
    scheduler.setTargets([target('keep')]);
    await flushMicrotasks();
    expect(prober.aborted).toContain('gone');
    expect(prober.released).toEqual(['gone']);
    const before = prober.calls.filter((k) => k === 'gone').length;
    await time.advance(5000);
    expect(prober.calls.filter((k) => k === 'gone').length).toBe(before);
    expect(results.filter((r) => r.target.key === 'gone')).toHaveLength(0);
    expect(scheduler.status('gone')).toBeUndefined();
    expect(scheduler.stats().targets).toBe(1);
    await scheduler.stop();
  });

  it('a changed endpoint starts over; a changed check keeps the state', async () => {
    const { time, prober, scheduler, transitions } = setup({ jitter: 0 });
    scheduler.setTargets([target('a', {}, 1), target('b', {}, 2)]);
    scheduler.start();
    await time.advance(1000);
    expect(scheduler.status('a')?.state).toBe('healthy');
    scheduler.setTargets([target('a', {}, 9), target('b', { path: '/other', unhealthyThreshold: 1 }, 2)]);
    expect(scheduler.status('a')?.state).toBe('unknown');
    expect(scheduler.status('b')?.state).toBe('healthy');
    expect(prober.released.sort()).toEqual(['a', 'b']);
    prober.outcomes.set('b', { ok: false, reason: 'http 500' });
    await time.advance(1100);
    // The new threshold (1) applies from the next probe.
    expect(transitions.filter((t) => t.target.key === 'b').at(-1)).toMatchObject({
      to: 'unhealthy',
      reason: 'http 500',
    });
    await scheduler.stop();
  });

  it('rejects invalid checks naming the target and field, without changing anything', () => {
    const { scheduler } = setup();
    scheduler.setTargets([target('ok')]);
    expect(() => scheduler.setTargets([target('x', { intervalMs: 0 })])).toThrow(
      'x.healthCheck.intervalMs: must be a positive integer, got 0',
    );
    expect(() => scheduler.setTargets([target('x', { expectedStatus: { min: 400, max: 200 } })])).toThrow(
      /x\.healthCheck\.expectedStatus: must be a range within 100-599/,
    );
    expect(() => scheduler.setTargets([target('x'), target('x')])).toThrow('x: duplicate target key');
    expect(scheduler.stats().targets).toBe(1);
    expect(() => new HealthScheduler({ probers: defaultProbers(), logger: silent, concurrency: 0 })).toThrow(
      /concurrency/,
    );
  });

  it('a throwing listener is logged and does not stop probing', async () => {
    const { time, scheduler, results } = setup({ jitter: 0 });
    scheduler.onTransition(() => {
      throw new Error('boom');
    });
    scheduler.setTargets([target('b1')]);
    scheduler.start();
    await time.advance(5000);
    expect(results.length).toBeGreaterThanOrEqual(4);
    await scheduler.stop();
  });

  it('stop() clears every timer', async () => {
    const { time, scheduler } = setup({ delayMs: 100 });
    scheduler.setTargets(Array.from({ length: 10 }, (_, i) => target(`b${i}`)));
    scheduler.start();
    await time.advance(950);
    const stopping = scheduler.stop();
    await time.advance(0);
    await stopping;
    expect(time.timerCount).toBe(0);
  });
});

describe('HealthScheduler (real sockets and timers)', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0)) await c();
  });

  it('tracks a real TCP backend going down and coming back on the same port', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (s: string) => lines.push(s) });
    const scheduler = new HealthScheduler({ probers: defaultProbers(), logger });
    cleanups.push(() => scheduler.stop());
    let server = await tcpListener();
    const port = server.port;
    const transitions: HealthTransition[] = [];
    const waitFor = async (n: number) => {
      for (let i = 0; i < 200 && transitions.length < n; i++) await new Promise((r) => setTimeout(r, 10));
    };
    scheduler.onTransition((t) => transitions.push(t));
    scheduler.setTargets([
      target(
        'default/web|tcp',
        { intervalMs: 50, timeoutMs: 200, healthyThreshold: 2, unhealthyThreshold: 2 },
        port,
      ),
    ]);
    scheduler.start();
    await waitFor(1);
    expect(transitions[0]).toMatchObject({ from: 'unknown', to: 'healthy', reason: 'connected' });
    await close(server);
    await waitFor(2);
    expect(transitions[1]).toMatchObject({
      from: 'healthy',
      to: 'unhealthy',
      reason: 'connect ECONNREFUSED',
    });
    server = await tcpListener(port);
    cleanups.push(() => close(server));
    await waitFor(3);
    expect(transitions[2]).toMatchObject({ from: 'unhealthy', to: 'healthy', reason: 'connected' });
    const logged = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'backend health changed');
    expect(logged[1]).toMatchObject({ component: 'health', to: 'unhealthy', reason: 'connect ECONNREFUSED' });
  });

  it('times out a hanging HTTP backend with a clear reason and closes the connection', async () => {
    const hanging = await httpServer(() => {});
    cleanups.push(() => close(hanging));
    const scheduler = new HealthScheduler({ probers: defaultProbers(), logger: silent });
    cleanups.push(() => scheduler.stop());
    const results: ProbeResult[] = [];
    scheduler.onResult((r) => results.push(r));
    scheduler.setTargets([
      target('hang', { protocol: 'http', intervalMs: 100, timeoutMs: 150 }, hanging.port),
    ]);
    scheduler.start();
    for (let i = 0; i < 200 && results.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
    expect(results[0]?.outcome).toEqual({ ok: false, reason: 'timeout after 150ms' });
    expect(results[0]!.durationMs).toBeGreaterThanOrEqual(149);
    await scheduler.stop();
    await new Promise((r) => setTimeout(r, 50));
    const open = await new Promise<number>((resolve) => hanging.getConnections((_, n) => resolve(n)));
    expect(open).toBe(0);
  });
});
