/**
 * Per-backend health state machine, pure. States: unknown (not yet decided), healthy, unhealthy.
 *
 *   unknown   --1 success---------------------> healthy    (Envoy: one pass suffices at start-up)
 *   unknown   --unhealthyThreshold failures---> unhealthy
 *   healthy   --unhealthyThreshold failures---> unhealthy
 *   unhealthy --healthyThreshold successes----> healthy
 *
 * Counters count consecutive results and reset on the opposite result. `reason` always holds the
 * latest probe's reason, so a healthy backend reads `http 200` and an unhealthy one `http 503`.
 */
import type { ProbeOutcome } from './types';

export type HealthState = 'healthy' | 'unhealthy' | 'unknown';

export interface HealthStatus {
  readonly state: HealthState;
  readonly reason: string;
  readonly consecutiveSuccesses: number;
  readonly consecutiveFailures: number;
}

export interface Thresholds {
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
}

export const INITIAL_STATUS: HealthStatus = Object.freeze({
  state: 'unknown',
  reason: 'not probed yet',
  consecutiveSuccesses: 0,
  consecutiveFailures: 0,
});

export function nextStatus(
  current: HealthStatus,
  outcome: ProbeOutcome,
  thresholds: Thresholds,
): HealthStatus {
  const consecutiveSuccesses = outcome.ok ? current.consecutiveSuccesses + 1 : 0;
  const consecutiveFailures = outcome.ok ? 0 : current.consecutiveFailures + 1;
  let state = current.state;
  if (outcome.ok) {
    if (
      state === 'unknown' ||
      (state === 'unhealthy' && consecutiveSuccesses >= thresholds.healthyThreshold)
    ) {
      state = 'healthy';
    }
  } else if (state !== 'unhealthy' && consecutiveFailures >= thresholds.unhealthyThreshold) {
    state = 'unhealthy';
  }
  return { state, reason: outcome.reason, consecutiveSuccesses, consecutiveFailures };
}
