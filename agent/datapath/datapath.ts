/**
 * The socket-LB datapath facade: plain services in, minimal map changes out. sync() computes the
 * desired state, diffs it against the writer's state and applies the plan; calls are serialised, and
 * after a change that removed backends an optional hook (the stale-UDP reaper) runs.
 */
import { computeDesiredState } from './desired-state';
import { type DatapathPlan, diffDatapath } from './diff';
import type { ServiceSpec } from './model';
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

  /** sync() under the name the agent's SpecWriter uses. */
  apply(services: readonly ServiceSpec[]): Promise<SyncResult> {
    return this.sync(services);
  }
}
