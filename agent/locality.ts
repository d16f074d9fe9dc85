/**
 * Locality-aware backend selection: which of a service's backends this node programs into the datapath.
 * Pure; see docs/agent.md "Locality" for the rule and why it follows Envoy's priority/panic semantics.
 *
 * Tiers, most preferred first, by trafficDistribution:
 *   any        → [all]
 *   PreferZone → [zone, all]
 *   PreferNode → [node, zone, all]
 * (a zone tier exists only when this node has a zone.) Nested tiers: node ⊆ zone ⊆ all.
 *
 * Rule, with P = panicThreshold percent (default 50, Envoy's healthy_panic_threshold; 0 disables panic):
 *  1. Only backends with weight > 0 take part (weight 0 = drained, never programmed).
 *  2. A backend is usable when its health is not 'unhealthy' and it is not ejected ('unknown' counts as
 *     usable, like a host without a health check in Envoy: a fresh agent must not blackhole a service).
 *  3. Walk the tiers in order; the first tier with at least one usable backend and a usable share of at
 *     least P% is chosen, and its usable backends are programmed. A tier that is empty, has no usable
 *     backend, or is degraded below P% falls through to the next (Envoy spills a degraded priority's
 *     traffic to the next priority rather than overload the few hosts it has left).
 *  4. If no tier qualifies, the widest tier ('all') decides: below P% it is in panic and every backend
 *     of it is programmed regardless of health (Envoy's panic mode: spread over all rather than overload
 *     the few left; the kernel's passive ejection still skips the dead ones). With P = 0 there is no panic:
 *     the usable backends of the widest tier are programmed, which may be none (connect fails fast).
 */

export type TrafficDistribution = 'any' | 'PreferNode' | 'PreferZone';
export type BackendHealth = 'healthy' | 'unhealthy' | 'unknown';
export type LocalityTier = 'node' | 'zone' | 'all';

export interface LocalityBackend {
  /** Node the backend runs on; undefined for an external backend. */
  readonly node?: string | null | undefined;
  readonly zone?: string | null | undefined;
  readonly weight: number;
  readonly health: BackendHealth;
  /** Ejected by passive outlier detection (as read back from the kernel). */
  readonly ejected?: boolean | undefined;
}

export interface LocalityInput<B extends LocalityBackend> {
  readonly backends: readonly B[];
  readonly trafficDistribution: TrafficDistribution;
  /** This node. */
  readonly node: string;
  readonly zone?: string | undefined;
  /** Percent from 0 to 100; default 50. */
  readonly panicThreshold?: number | undefined;
}

export interface LocalityChoice<B extends LocalityBackend> {
  /** Backends to program, in input order. */
  readonly backends: readonly B[];
  readonly tier: LocalityTier;
  /** True when the chosen tier is below the panic threshold and is used without regard to health. */
  readonly panic: boolean;
  /** Per tier walked: why it was taken or skipped, for logs (`node: 0/2 usable`). */
  readonly trail: readonly string[];
}

export const DEFAULT_PANIC_THRESHOLD = 50;

export function isUsable(backend: LocalityBackend): boolean {
  return backend.weight > 0 && backend.health !== 'unhealthy' && !backend.ejected;
}

function tiersFor(distribution: TrafficDistribution, hasZone: boolean): LocalityTier[] {
  switch (distribution) {
    case 'any':
      return ['all'];
    case 'PreferZone':
      return hasZone ? ['zone', 'all'] : ['all'];
    case 'PreferNode':
      return hasZone ? ['node', 'zone', 'all'] : ['node', 'all'];
  }
}

export function chooseBackends<B extends LocalityBackend>(input: LocalityInput<B>): LocalityChoice<B> {
  const threshold = input.panicThreshold ?? DEFAULT_PANIC_THRESHOLD;
  if (!Number.isFinite(threshold) || threshold < 0 || threshold > 100) {
    throw new RangeError(`panicThreshold: must be a percentage from 0 to 100, got ${threshold}`);
  }
  const active = input.backends.filter((b) => b.weight > 0);
  const inTier = (tier: LocalityTier) => (b: B) =>
    tier === 'all' ||
    (tier === 'node' ? b.node === input.node : input.zone !== undefined && b.zone === input.zone);
  const trail: string[] = [];
  let widest: { tier: LocalityTier; members: B[]; usable: B[] } | undefined;
  for (const tier of tiersFor(input.trafficDistribution, input.zone !== undefined)) {
    const members = active.filter(inTier(tier));
    const usable = members.filter(isUsable);
    widest = { tier, members, usable };
    const share = members.length === 0 ? 0 : (usable.length * 100) / members.length;
    const summary = `${tier}: ${usable.length}/${members.length} usable`;
    if (usable.length > 0 && share >= threshold) {
      trail.push(`${summary}, chosen`);
      return { backends: usable, tier, panic: false, trail };
    }
    trail.push(
      `${summary}, ${members.length === 0 ? 'empty' : usable.length === 0 ? 'none usable' : `below ${threshold}%`}`,
    );
  }
  // The loop always ends on 'all'.
  const last = widest!;
  if (threshold > 0 && last.members.length > 0) {
    trail.push(`${last.tier}: panic, using all ${last.members.length}`);
    return { backends: last.members, tier: last.tier, panic: true, trail };
  }
  return { backends: last.usable, tier: last.tier, panic: false, trail };
}
