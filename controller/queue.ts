import { coalesceDeltas, type VersionedDelta } from './diff';

/** What an agent's queue holds: nothing, one coalesced delta, or "send a full snapshot" after an overflow. */
export type QueueItem<S extends { readonly key: string }> =
  | { readonly kind: 'delta'; readonly delta: VersionedDelta<S> }
  | { readonly kind: 'snapshot' };

/**
 * A per-agent bounded queue. Consecutive deltas are coalesced into one (superseded changes to a service
 * are dropped), so the queue holds at most one item whatever the agent's speed. When the coalesced delta
 * would name more than `maxServices` services, it is replaced by a snapshot request: a stuck agent costs
 * O(1) memory and gets a full resync once it reads again.
 */
export class AgentQueue<S extends { readonly key: string }> {
  private item: QueueItem<S> | null = null;
  /** Deltas merged into an earlier one since the queue was created. */
  coalesced = 0;
  /** Times the queue overflowed into a snapshot request. */
  overflows = 0;

  constructor(private readonly maxServices: number) {}

  get pending(): QueueItem<S> | null {
    return this.item;
  }

  push(delta: VersionedDelta<S>): void {
    const current = this.item;
    if (current === null) {
      this.item = this.bounded({ kind: 'delta', delta });
    } else if (current.kind === 'delta') {
      this.coalesced++;
      this.item = this.bounded({ kind: 'delta', delta: coalesceDeltas(current.delta, delta) });
    }
    // A pending snapshot is built when it is sent, so it already covers this delta.
  }

  /** Replaces whatever is queued with a full snapshot request. */
  pushSnapshot(): void {
    this.item = { kind: 'snapshot' };
  }

  take(): QueueItem<S> | null {
    const item = this.item;
    this.item = null;
    return item;
  }

  private bounded(item: { kind: 'delta'; delta: VersionedDelta<S> }): QueueItem<S> {
    if (item.delta.upserts.length + item.delta.deletes.length <= this.maxServices) return item;
    this.overflows++;
    return { kind: 'snapshot' };
  }
}
