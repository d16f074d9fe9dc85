/**
 * The socket-LB datapath facade: plain services in, minimal map changes out. sync() computes the
 * desired state, diffs it against the writer's state and applies the plan; calls are serialised, and
 * after a change that removed backends an optional hook (the stale-UDP reaper) runs.
 */
import { computeDesiredState, serviceRefKey } from './desired-state';
import { type DatapathPlan, diffDatapath } from './diff';
import { LbModelError, type ServiceSpec } from './model';
import type { LbSettings } from './settings';
import type { ApplyResult, DatapathWriter } from './writer';

export interface SyncResult extends ApplyResult {
  readonly plan: DatapathPlan;
  /** ms to compute the desired state and the diff. */
  readonly planMs: number;
}

export class SocketLbDatapath {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly writer: DatapathWriter,
    readonly settings: LbSettings,
    private readonly afterRemoval?: () => void,
  ) {}

  /** Makes the maps hold exactly these services. Bad input or a capacity limit throws, writing nothing. */
  sync(services: readonly ServiceSpec[]): Promise<SyncResult> {
    const run = this.queue.then(async () => {
      const started = performance.now();
      const desired = computeDesiredState(services, this.settings);
      const plan = diffDatapath(this.writer.state, desired, this.settings);
      const planMs = performance.now() - started;
      const applied = await this.writer.apply(plan);
      if (plan.summary.backendsRemoved > 0) this.afterRemoval?.();
      return { ...applied, plan, planMs };
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Changes only these services (added or replaced whole) and removes the listed ones; every other
   * service stays as it is. Work is proportional to the change, not to the number of services.
   */
  update(change: {
    upsert?: readonly ServiceSpec[];
    remove?: readonly { vip: string; port: number; protocol?: 'tcp' | 'udp' }[];
  }): Promise<SyncResult> {
    const run = this.queue.then(async () => {
      const started = performance.now();
      const desired = computeDesiredState(change.upsert ?? [], this.settings);
      const remove = (change.remove ?? []).map((ref, i) => serviceRefKey(ref, `remove[${i}]`));
      for (const [i, key] of remove.entries()) {
        if (desired.has(key)) throw new LbModelError(`remove[${i}]`, `${key} is also in upsert`);
      }
      const plan = diffDatapath(this.writer.state, desired, this.settings, { partial: true, remove });
      const planMs = performance.now() - started;
      const applied = await this.writer.apply(plan);
      if (plan.summary.backendsRemoved > 0) this.afterRemoval?.();
      return { ...applied, plan, planMs };
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** sync() under the name the agent's SpecWriter uses. */
  apply(services: readonly ServiceSpec[]): Promise<SyncResult> {
    return this.sync(services);
  }
}
