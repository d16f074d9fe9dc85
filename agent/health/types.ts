/**
 * Shared types of the active health checker: what to probe, how, and what a probe says.
 * Probers do I/O; the state machine is pure; the scheduler owns time through injected Clock and Timers.
 */

export type ProbeProtocol = 'tcp' | 'http' | 'grpc';

export interface HealthCheckSpec {
  readonly protocol: ProbeProtocol;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Consecutive successes that turn an unhealthy backend healthy. */
  readonly healthyThreshold: number;
  /** Consecutive failures that turn a healthy (or unknown) backend unhealthy. */
  readonly unhealthyThreshold: number;
  /** http: path of the GET (default `/`). */
  readonly path?: string | undefined;
  /** http: accepted status codes, inclusive (default 200-399). */
  readonly expectedStatus?: { readonly min: number; readonly max: number } | undefined;
  /** http: Host header (default the backend address). */
  readonly host?: string | undefined;
  /** grpc: service name in the HealthCheckRequest (default '' = the whole server). */
  readonly grpcService?: string | undefined;
}

export interface ProbeTarget {
  /** Stable identity of the backend within the checker, e.g. `default/web|10.0.1.11:8080`. */
  readonly key: string;
  /** `namespace/name` of the service, for metrics and logs. */
  readonly service: string;
  readonly address: string;
  readonly port: number;
  readonly check: HealthCheckSpec;
}

export interface ProbeOutcome {
  readonly ok: boolean;
  /** Short, stable, human-readable: `http 200`, `http 503`, `connect ECONNREFUSED`, `timeout after 500ms`. */
  readonly reason: string;
}

/**
 * One probe protocol. probe() must settle soon after `signal` aborts (the scheduler aborts it at the
 * timeout) and must release every socket it opened by then.
 */
export interface Prober {
  probe(target: ProbeTarget, signal: AbortSignal): Promise<ProbeOutcome>;
  /** Drops per-target state (a cached channel); called when a target is removed or its check changes. */
  release?(target: ProbeTarget): void;
  close?(): void;
}

export type Probers = Readonly<Record<ProbeProtocol, Prober>>;

export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
}

export interface TimerHandle {
  unref?(): unknown;
}

export interface Timers {
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  /** Runs fn after pending I/O callbacks (Node's setImmediate); setTimeout(fn, 0) is used without it. */
  setImmediate?(fn: () => void): TimerHandle;
  clearImmediate?(handle: TimerHandle): void;
}

export const systemClock: Clock = { now: () => performance.now() };

export const systemTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
  setImmediate: (fn) => setImmediate(fn),
  clearImmediate: (handle) => clearImmediate(handle as NodeJS.Immediate),
};

/** `connect ECONNREFUSED` from a socket error, falling back to the message. */
export function connectReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code === 'string' && /^E[A-Z]+$/.test(e.code)) return `connect ${e.code}`;
  return `error ${e?.message ?? String(err)}`;
}
