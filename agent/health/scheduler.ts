/**
 * Runs the active health checks of many backends: one state machine per target, a probe every
 * interval (± jitter) after the previous one ends, a hard timeout, at most `concurrency` probes in
 * flight and at most `startsPerTurn` started per event-loop turn, so thousands of backends never stall
 * the event loop or exhaust file descriptors. Probes that come due while a limit is reached wait in a
 * FIFO queue (first come, first served: no backend starves).
 *
 * Transitions are delivered synchronously to onTransition listeners as soon as the probe that causes
 * them settles, so the agent can apply them to the datapath at once and report them to the controller.
 * Clock, timers and randomness are injected; I/O lives in the probers.
 */
import type { Logger } from 'pino';
import { type HealthState, type HealthStatus, INITIAL_STATUS, nextStatus } from './state-machine';
import {
  type Clock,
  type HealthCheckSpec,
  type ProbeOutcome,
  type Probers,
  type ProbeTarget,
  systemClock,
  systemTimers,
  type TimerHandle,
  type Timers,
} from './types';

export interface HealthTransition<T extends ProbeTarget = ProbeTarget> {
  readonly target: T;
  readonly from: HealthState;
  readonly to: HealthState;
  readonly reason: string;
  /** Clock time of the transition, ms. */
  readonly at: number;
}

export interface ProbeResult<T extends ProbeTarget = ProbeTarget> {
  readonly target: T;
  readonly outcome: ProbeOutcome;
  readonly durationMs: number;
  readonly status: HealthStatus;
}

export interface HealthSchedulerOptions {
  readonly probers: Probers;
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly timers?: Timers;
  /** Uniform in [0, 1). */
  readonly random?: () => number;
  /** Probes in flight at most (default 256). */
  readonly concurrency?: number;
  /** Fraction of the interval added or removed at random for each wait (default 0.1: ±10%). */
  readonly jitter?: number;
  /**
   * Probes started per event-loop turn at most (default 32); the rest wait for the next turn, so a
   * burst of due probes never holds the loop for long (each start costs a socket and a connect).
   */
  readonly startsPerTurn?: number;
}

export interface SchedulerStats {
  readonly targets: number;
  readonly inFlight: number;
  readonly queued: number;
  readonly probesStarted: number;
}

interface Entry<T extends ProbeTarget> {
  target: T;
  status: HealthStatus;
  phase: 'waiting' | 'queued' | 'running';
  timer: TimerHandle | undefined;
  abort: AbortController | undefined;
  /** Bumped whenever the target changes or is removed: a settling probe of an older one is ignored. */
  generation: number;
}

export const DEFAULT_CONCURRENCY = 256;
export const DEFAULT_JITTER = 0.1;
export const DEFAULT_STARTS_PER_TURN = 32;

/** Rejects a check that cannot be scheduled, naming the field. */
export function validateCheck(check: HealthCheckSpec, where = 'healthCheck'): void {
  const positiveInt = (value: number, field: string) => {
    if (!Number.isInteger(value) || value < 1)
      throw new RangeError(`${where}.${field}: must be a positive integer, got ${value}`);
  };
  positiveInt(check.intervalMs, 'intervalMs');
  positiveInt(check.timeoutMs, 'timeoutMs');
  positiveInt(check.healthyThreshold, 'healthyThreshold');
  positiveInt(check.unhealthyThreshold, 'unhealthyThreshold');
  const range = check.expectedStatus;
  if (
    range &&
    !(
      Number.isInteger(range.min) &&
      Number.isInteger(range.max) &&
      range.min >= 100 &&
      range.max <= 599 &&
      range.min <= range.max
    )
  ) {
    throw new RangeError(
      `${where}.expectedStatus: must be a range within 100-599, got ${range.min}-${range.max}`,
    );
  }
}

function sameEndpoint(a: ProbeTarget, b: ProbeTarget): boolean {
  return a.address === b.address && a.port === b.port && a.check.protocol === b.check.protocol;
}

function sameCheck(a: HealthCheckSpec, b: HealthCheckSpec): boolean {
  return (
    a.protocol === b.protocol &&
    a.intervalMs === b.intervalMs &&
    a.timeoutMs === b.timeoutMs &&
    a.healthyThreshold === b.healthyThreshold &&
    a.unhealthyThreshold === b.unhealthyThreshold &&
    a.path === b.path &&
    a.host === b.host &&
    a.grpcService === b.grpcService &&
    a.expectedStatus?.min === b.expectedStatus?.min &&
    a.expectedStatus?.max === b.expectedStatus?.max
  );
}

/** T: the caller's target type (a ProbeTarget with extra fields); transitions hand it back as given. */
export class HealthScheduler<T extends ProbeTarget = ProbeTarget> {
  private readonly entries = new Map<string, Entry<T>>();
  private readonly queue: Entry<T>[] = [];
  private queueHead = 0;
  private inFlight = 0;
  private probesStarted = 0;
  private readonly running = new Set<Promise<void>>();
  private readonly transitionListeners = new Set<(t: HealthTransition<T>) => void>();
  private readonly resultListeners = new Set<(r: ProbeResult<T>) => void>();
  private started = false;
  private stopped = false;

  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly random: () => number;
  private readonly concurrency: number;
  private readonly jitter: number;
  private readonly startsPerTurn: number;
  private turnBudget: number;
  private turnTimer: TimerHandle | undefined;

  constructor(private readonly options: HealthSchedulerOptions) {
    this.log = options.logger.child({ component: 'health' });
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    this.random = options.random ?? Math.random;
    this.concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
    this.jitter = options.jitter ?? DEFAULT_JITTER;
    this.startsPerTurn = options.startsPerTurn ?? DEFAULT_STARTS_PER_TURN;
    this.turnBudget = this.startsPerTurn;
    if (!(this.startsPerTurn >= 1)) {
      throw new RangeError(`startsPerTurn: must be at least 1, got ${this.startsPerTurn}`);
    }
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) {
      throw new RangeError(`concurrency: must be a positive integer, got ${this.concurrency}`);
    }
    if (!(this.jitter >= 0 && this.jitter < 1))
      throw new RangeError(`jitter: must be in [0, 1), got ${this.jitter}`);
  }

  onTransition(listener: (t: HealthTransition<T>) => void): () => void {
    this.transitionListeners.add(listener);
    return () => this.transitionListeners.delete(listener);
  }

  onResult(listener: (r: ProbeResult<T>) => void): () => void {
    this.resultListeners.add(listener);
    return () => this.resultListeners.delete(listener);
  }

  /**
   * Replaces the set of targets. New keys start unknown with a first probe at a random point within
   * one interval (spreading a large set evenly); removed keys stop at once (an in-flight probe is
   * aborted and its result dropped); a key whose address, port or protocol changed starts over; a key
   * whose other check settings changed keeps its state and uses them from its next probe.
   * Throws RangeError naming the target's key on an invalid check, before changing anything.
   */
  setTargets(targets: readonly T[]): void {
    const wanted = new Map<string, T>();
    for (const t of targets) {
      validateCheck(t.check, `${t.key}.healthCheck`);
      if (wanted.has(t.key)) throw new RangeError(`${t.key}: duplicate target key`);
      wanted.set(t.key, t);
    }
    for (const [key, entry] of this.entries) {
      if (!wanted.has(key)) this.remove(entry);
    }
    for (const target of wanted.values()) {
      const entry = this.entries.get(target.key);
      if (!entry) {
        this.add(target);
      } else if (!sameEndpoint(entry.target, target)) {
        this.remove(entry);
        this.add(target);
      } else if (!sameCheck(entry.target.check, target.check)) {
        const intervalChanged = entry.target.check.intervalMs !== target.check.intervalMs;
        this.release(entry.target);
        entry.target = target;
        if (intervalChanged && entry.phase === 'waiting' && this.started && !this.stopped)
          this.arm(entry, this.random() * target.check.intervalMs);
      } else {
        entry.target = target;
      }
    }
  }

  /** Begins probing (targets set before start() wait for it). */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    for (const entry of this.entries.values()) this.arm(entry, this.random() * entry.target.check.intervalMs);
  }

  /** Stops every timer, aborts probes in flight, waits for them and closes the probers. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const entry of this.entries.values()) {
      if (entry.timer) this.timers.clearTimeout(entry.timer);
      entry.timer = undefined;
      entry.generation++;
      entry.abort?.abort();
    }
    this.queue.length = 0;
    this.queueHead = 0;
    if (this.turnTimer) {
      if (this.timers.clearImmediate) this.timers.clearImmediate(this.turnTimer);
      else this.timers.clearTimeout(this.turnTimer);
    }
    this.turnTimer = undefined;
    await Promise.allSettled([...this.running]);
    for (const prober of new Set(Object.values(this.options.probers))) prober.close?.();
  }

  status(key: string): HealthStatus | undefined {
    return this.entries.get(key)?.status;
  }

  statuses(): Map<string, HealthStatus> {
    return new Map([...this.entries].map(([key, e]) => [key, e.status]));
  }

  stats(): SchedulerStats {
    return {
      targets: this.entries.size,
      inFlight: this.inFlight,
      queued: this.queue.length - this.queueHead,
      probesStarted: this.probesStarted,
    };
  }

  private add(target: T): void {
    const entry: Entry<T> = {
      target,
      status: INITIAL_STATUS,
      phase: 'waiting',
      timer: undefined,
      abort: undefined,
      generation: 0,
    };
    this.entries.set(target.key, entry);
    if (this.started && !this.stopped) this.arm(entry, this.random() * target.check.intervalMs);
  }

  private remove(entry: Entry<T>): void {
    this.entries.delete(entry.target.key);
    if (entry.timer) this.timers.clearTimeout(entry.timer);
    entry.timer = undefined;
    entry.generation++;
    entry.abort?.abort();
    // A queued entry is skipped when dequeued (it is no longer in `entries`).
    this.release(entry.target);
  }

  private release(target: ProbeTarget): void {
    this.options.probers[target.check.protocol].release?.(target);
  }

  private arm(entry: Entry<T>, delayMs: number): void {
    if (entry.timer) this.timers.clearTimeout(entry.timer);
    entry.phase = 'waiting';
    const timer = this.timers.setTimeout(
      () => {
        entry.timer = undefined;
        this.due(entry);
      },
      Math.max(0, delayMs),
    );
    timer.unref?.();
    entry.timer = timer;
  }

  private nextDelay(intervalMs: number): number {
    return intervalMs * (1 + this.jitter * (2 * this.random() - 1));
  }

  private canStart(): boolean {
    return this.inFlight < this.concurrency && this.turnBudget > 0;
  }

  /** Spends one start of this turn's budget; the budget refills (and the queue drains) next turn. */
  private spendTurnBudget(): void {
    this.turnBudget--;
    if (this.turnTimer || this.stopped) return;
    const refill = () => {
      this.turnTimer = undefined;
      this.turnBudget = this.startsPerTurn;
      this.pump();
    };
    // setImmediate: the next batch starts right after the I/O callbacks now pending, not a timer tick later.
    const timer = this.timers.setImmediate
      ? this.timers.setImmediate(refill)
      : this.timers.setTimeout(refill, 0);
    timer.unref?.();
    this.turnTimer = timer;
  }

  private due(entry: Entry<T>): void {
    if (this.stopped || this.entries.get(entry.target.key) !== entry) return;
    // Always through the queue: FIFO order holds, and stale entries ahead are skipped by pump().
    entry.phase = 'queued';
    this.queue.push(entry);
    this.pump();
  }

  private pump(): void {
    while (!this.stopped && this.canStart() && this.queueHead < this.queue.length) {
      const entry = this.queue[this.queueHead++]!;
      if (this.entries.get(entry.target.key) === entry && entry.phase === 'queued') this.run(entry);
    }
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    } else if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
  }

  private run(entry: Entry<T>): void {
    entry.phase = 'running';
    this.spendTurnBudget();
    this.inFlight++;
    this.probesStarted++;
    const done = this.probe(entry).finally(() => {
      this.running.delete(done);
      this.inFlight--;
      this.pump();
    });
    this.running.add(done);
  }

  private async probe(entry: Entry<T>): Promise<void> {
    const target = entry.target;
    const generation = entry.generation;
    const abort = new AbortController();
    entry.abort = abort;
    const { timeoutMs } = target.check;
    const started = this.clock.now();
    let timeout: TimerHandle | undefined;
    let expired = false;
    const timeoutOutcome: ProbeOutcome = { ok: false, reason: `timeout after ${timeoutMs}ms` };
    const timedOut = new Promise<ProbeOutcome>((resolve) => {
      timeout = this.timers.setTimeout(() => {
        expired = true;
        resolve(timeoutOutcome);
        abort.abort();
      }, timeoutMs);
    });
    let outcome: ProbeOutcome;
    try {
      // The race frees the slot at the timeout even if a prober is slow to honour the abort.
      outcome = await Promise.race([
        this.options.probers[target.check.protocol].probe(target, abort.signal),
        timedOut,
      ]);
    } catch (err) {
      outcome = { ok: false, reason: `error ${(err as Error).message}` };
    } finally {
      if (timeout) this.timers.clearTimeout(timeout);
      if (entry.abort === abort) entry.abort = undefined;
    }
    // A prober that settled as 'aborted' because of the timeout reports the timeout.
    if (expired) outcome = timeoutOutcome;
    if (this.stopped || generation !== entry.generation || this.entries.get(target.key) !== entry) return;
    const durationMs = this.clock.now() - started;
    const from = entry.status.state;
    entry.status = nextStatus(entry.status, outcome, entry.target.check);
    const result: ProbeResult<T> = { target: entry.target, outcome, durationMs, status: entry.status };
    for (const listener of this.resultListeners) this.call(listener, result);
    if (entry.status.state !== from) {
      const transition: HealthTransition<T> = {
        target: entry.target,
        from,
        to: entry.status.state,
        reason: outcome.reason,
        at: this.clock.now(),
      };
      this.log.info(
        { backend: target.key, service: target.service, from, to: transition.to, reason: transition.reason },
        'backend health changed',
      );
      for (const listener of this.transitionListeners) this.call(listener, transition);
    }
    this.arm(entry, this.nextDelay(entry.target.check.intervalMs));
  }

  private call<T>(listener: (value: T) => void, value: T): void {
    try {
      listener(value);
    } catch (err) {
      this.log.error({ err }, 'health listener threw');
    }
  }
}
