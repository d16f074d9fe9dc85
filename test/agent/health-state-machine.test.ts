import { describe, expect, it } from 'vitest';
import { type HealthStatus, INITIAL_STATUS, nextStatus } from '../../agent/health/state-machine';

const ok = { ok: true, reason: 'http 200' };
const bad = { ok: false, reason: 'http 503' };
const thresholds = { healthyThreshold: 3, unhealthyThreshold: 2 };

function run(
  results: { ok: boolean; reason: string }[],
  from: HealthStatus = INITIAL_STATUS,
): HealthStatus[] {
  const out: HealthStatus[] = [];
  let status = from;
  for (const r of results) {
    status = nextStatus(status, r, thresholds);
    out.push(status);
  }
  return out;
}

describe('health state machine', () => {
  it('starts unknown and becomes healthy on the first success', () => {
    expect(INITIAL_STATUS).toMatchObject({ state: 'unknown', reason: 'not probed yet' });
    expect(run([ok])[0]).toEqual({
      state: 'healthy',
      reason: 'http 200',
      consecutiveSuccesses: 1,
      consecutiveFailures: 0,
    });
  });

  it('from unknown needs unhealthyThreshold failures to become unhealthy', () => {
    expect(run([bad, bad]).map((s) => s.state)).toEqual(['unknown', 'unhealthy']);
  });

  it('healthy → unhealthy after unhealthyThreshold consecutive failures only', () => {
    const states = run([ok, bad, ok, bad, bad, bad]).map((s) => s.state);
    expect(states).toEqual(['healthy', 'healthy', 'healthy', 'healthy', 'unhealthy', 'unhealthy']);
  });

  it('unhealthy → healthy after healthyThreshold consecutive successes only', () => {
    const down = run([bad, bad]).at(-1)!;
    const states = run([ok, ok, bad, ok, ok, ok], down).map((s) => s.state);
    expect(states).toEqual(['unhealthy', 'unhealthy', 'unhealthy', 'unhealthy', 'unhealthy', 'healthy']);
  });

  it('keeps the latest reason and counts streaks', () => {
    const last = run([ok, bad, { ok: false, reason: 'timeout after 500ms' }]).at(-1)!;
    expect(last).toEqual({
      state: 'unhealthy',
      reason: 'timeout after 500ms',
      consecutiveSuccesses: 0,
      consecutiveFailures: 2,
    });
  });

  it('thresholds of 1 flip on every result', () => {
    const one = { healthyThreshold: 1, unhealthyThreshold: 1 };
    let s = nextStatus(INITIAL_STATUS, bad, one);
    expect(s.state).toBe('unhealthy');
    s = nextStatus(s, ok, one);
    expect(s.state).toBe('healthy');
    s = nextStatus(s, bad, one);
    expect(s.state).toBe('unhealthy');
  });
});
