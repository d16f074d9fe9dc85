import { normaliseIp } from './catalog/address';
import { type Backend, backendId, type Catalog, type Service } from './catalog/types';
import type { Clock } from './clock';
import {
  type BackendHealth,
  fromWireHealth,
  type HealthState,
  type WireBackendRef,
  type WireHealthResult,
} from './protocol';
import { hash32 } from './rendezvous';

/**
 * Probe ownership and health aggregation.
 *
 * - A backend with a `node` is probed by that node's agent only. An external backend (no node) is probed by
 *   `externalOwners` (2) connected agents chosen by rendezvous hashing; when one leaves, only its share moves.
 * - Only reports from a backend's current owners are accepted. A backend's health is HEALTHY if any valid
 *   report says healthy, else UNHEALTHY if any says unhealthy, else UNKNOWN (fail open). Services without a
 *   healthCheck are always UNKNOWN.
 * - When a reporter stops owning a backend (it disconnected, or the external backend moved), its last report
 *   stays valid for `graceMs`, then expires. For a node backend nobody else can probe, so it becomes UNKNOWN
 *   unless the node's agent comes back in time; an external backend has already been reassigned and the new
 *   owner's reports take over.
 */
export interface HealthAggregatorOptions {
  readonly clock: Clock;
  readonly graceMs: number;
  readonly externalOwners?: number;
  /** Merged health changed for these services (after expiry of reports). */
  readonly onChange: (serviceKeys: ReadonlySet<string>) => void;
  /** The probe assignment of a connected agent changed. */
  readonly onAssignment: (node: string, backends: readonly WireBackendRef[]) => void;
}

interface Report {
  state: HealthState;
  reason: string;
  /** null while the reporter owns the backend and is connected. */
  expiresAt: number | null;
}

interface Owner {
  readonly name: string;
  readonly score: number;
}

/** Rendezvous order: higher score first, ties by name (as rendezvousOwners). */
function better(a: Owner, b: Owner): boolean {
  return a.score > b.score || (a.score === b.score && a.name < b.name);
}

interface BackendInfo {
  readonly serviceKey: string;
  readonly ref: WireBackendRef;
  readonly node: string | null;
  readonly checked: boolean;
}

export interface ReportOutcome {
  readonly accepted: number;
  readonly ignored: number;
  /** Services whose merged health changed. */
  readonly changed: ReadonlySet<string>;
}

const UNKNOWN: BackendHealth = Object.freeze({ state: 'unknown', reason: '' });

export function backendKey(serviceKey: string, backend: Pick<Backend, 'address' | 'port'>): string {
  return `${serviceKey}|${backendId(backend)}`;
}

export class HealthAggregator {
  private readonly services = new Map<string, Service>();
  private readonly backends = new Map<string, BackendInfo>();
  /** Checked node backends of each node. */
  private readonly byNode = new Map<string, Map<string, WireBackendRef>>();
  /** Checked external backends. */
  private readonly externals = new Set<string>();
  /** Owners of each external backend, best score first. */
  private readonly externalOwners = new Map<string, readonly Owner[]>();
  private readonly connected = new Set<string>();
  private readonly reports = new Map<string, Map<string, Report>>();
  private readonly lastAssignment = new Map<string, string>();
  private expiryTimer: unknown = null;
  private expiryAt = Number.POSITIVE_INFINITY;

  constructor(private readonly options: HealthAggregatorOptions) {}

  /**
   * Installs a new catalog. Incremental: services that are the same object as before (the parser's cache
   * keeps unchanged services identical) cost a lookup; only agents whose assignment may change are told.
   * Reports survive a service change as long as the backend is still there and still checked.
   */
  setCatalog(catalog: Catalog): void {
    const nodes = new Set<string>();
    const added: string[] = [];
    const removed: string[] = [];
    // Keys are unique in a catalog: when every service known before is still there, none left.
    const before = this.services.size;
    let kept = 0;
    for (const service of catalog.services) {
      const old = this.services.get(service.key);
      if (old !== undefined) kept++;
      if (old === service) continue;
      if (old) this.removeService(old, nodes, removed);
      this.addService(service, nodes, added);
      this.services.set(service.key, service);
    }
    if (kept !== before) {
      const seen = new Set(catalog.services.map((s) => s.key));
      for (const [key, old] of this.services) {
        if (seen.has(key)) continue;
        this.removeService(old, nodes, removed);
        this.services.delete(key);
      }
    }
    for (const key of removed) if (!this.backends.get(key)?.checked) this.reports.delete(key);
    this.updateReports(added);
    this.notify(nodes);
  }

  private addService(service: Service, nodes: Set<string>, added: string[]): void {
    const checked = service.healthCheck !== null;
    for (const b of service.backends) {
      const key = backendKey(service.key, b);
      const ref = { service: service.key, address: b.address, port: b.port ?? 0 };
      this.backends.set(key, { serviceKey: service.key, ref, node: b.node, checked });
      if (!checked) continue;
      added.push(key);
      if (b.node !== null) {
        const refs = this.byNode.get(b.node) ?? new Map<string, WireBackendRef>();
        this.byNode.set(b.node, refs);
        refs.set(key, ref);
        nodes.add(b.node);
      } else {
        this.externals.add(key);
        const owners = this.rank(key);
        this.externalOwners.set(key, owners);
        for (const o of owners) nodes.add(o.name);
      }
    }
  }

  private removeService(service: Service, nodes: Set<string>, removed: string[]): void {
    for (const b of service.backends) {
      const key = backendKey(service.key, b);
      this.backends.delete(key);
      removed.push(key);
      if (b.node !== null) {
        if (this.byNode.get(b.node)?.delete(key)) nodes.add(b.node);
      } else if (this.externals.delete(key)) {
        for (const o of this.externalOwners.get(key) ?? []) nodes.add(o.name);
        this.externalOwners.delete(key);
      }
    }
  }

  /**
   * A node's agent connected. Cost O(externals + the node's backends): it can only join the owners of an
   * external backend whose current worst owner it beats.
   */
  agentConnected(node: string): void {
    this.connected.add(node);
    const count = this.options.externalOwners ?? 2;
    const moved = new Set<string>([node]);
    const touched: string[] = [...(this.byNode.get(node)?.keys() ?? [])];
    for (const key of this.externals) {
      const owners = this.externalOwners.get(key) ?? [];
      const candidate = { name: node, score: hash32(`${key}\u0000${node}`) };
      const worst = owners.at(-1);
      if (owners.length < count || (worst && better(candidate, worst))) {
        const next = [...owners.filter((o) => o.name !== node), candidate].sort((a, b) =>
          better(a, b) ? -1 : 1,
        );
        const dropped = next.length > count ? next.pop() : undefined;
        if (dropped) moved.add(dropped.name);
        this.externalOwners.set(key, next);
        touched.push(key);
      }
    }
    this.updateReports(touched);
    this.notify(moved);
  }

  /** A node's agent disconnected: the external backends it owned are re-ranked among the others. */
  agentDisconnected(node: string): void {
    this.connected.delete(node);
    this.lastAssignment.delete(node);
    const moved = new Set<string>();
    const touched: string[] = [...(this.byNode.get(node)?.keys() ?? [])];
    for (const key of this.externals) {
      if (!this.externalOwners.get(key)?.some((o) => o.name === node)) continue;
      const next = this.rank(key);
      for (const o of next) moved.add(o.name);
      this.externalOwners.set(key, next);
      touched.push(key);
    }
    this.updateReports(touched);
    this.notify(moved);
  }

  /** Current owners of a backend (connected agents only). */
  owners(key: string): readonly string[] {
    const info = this.backends.get(key);
    if (!info?.checked) return [];
    if (info.node !== null) return this.connected.has(info.node) ? [info.node] : [];
    return (this.externalOwners.get(key) ?? []).map((o) => o.name);
  }

  /** The backends a node's agent must probe now. */
  assignment(node: string): WireBackendRef[] {
    const refs = [...(this.byNode.get(node)?.values() ?? [])];
    for (const key of this.externals) {
      if (this.externalOwners.get(key)?.some((o) => o.name === node)) refs.push(this.backends.get(key)!.ref);
    }
    return refs;
  }

  health(serviceKey: string, backend: Pick<Backend, 'address' | 'port'>): BackendHealth {
    return this.merged(backendKey(serviceKey, backend));
  }

  /** Records an agent's results; reports for backends it does not own are ignored. */
  report(node: string, results: readonly WireHealthResult[]): ReportOutcome {
    let accepted = 0;
    let ignored = 0;
    const changed = new Set<string>();
    for (const r of results) {
      const address = normaliseIp(r.address);
      const state = fromWireHealth(r.state);
      const key =
        address === null ? '' : backendKey(r.service, { address, port: r.port === 0 ? null : r.port });
      if (state === null || !this.owners(key).includes(node)) {
        ignored++;
        continue;
      }
      accepted++;
      const before = this.merged(key);
      const perNode = this.reports.get(key) ?? new Map<string, Report>();
      this.reports.set(key, perNode);
      perNode.set(node, { state, reason: r.reason, expiresAt: null });
      const after = this.merged(key);
      if (before.state !== after.state || before.reason !== after.reason) changed.add(r.service);
    }
    return { accepted, ignored, changed };
  }

  private merged(key: string): BackendHealth {
    const perNode = this.reports.get(key);
    if (!perNode || !this.backends.get(key)?.checked) return UNKNOWN;
    const now = this.options.clock.now();
    let healthy = false;
    const unhealthy: string[] = [];
    for (const [node, r] of perNode) {
      if (r.expiresAt !== null && r.expiresAt <= now) continue;
      if (r.state === 'healthy') healthy = true;
      else if (r.state === 'unhealthy') unhealthy.push(r.reason ? `${node}: ${r.reason}` : node);
    }
    if (healthy) return { state: 'healthy', reason: '' };
    if (unhealthy.length > 0) return { state: 'unhealthy', reason: unhealthy.sort().join('; ') };
    return UNKNOWN;
  }

  /** The owners of an external backend among the connected agents (same result as rendezvousOwners). */
  private rank(key: string): Owner[] {
    const count = this.options.externalOwners ?? 2;
    const scored: Owner[] = [];
    for (const name of this.connected) scored.push({ name, score: hash32(`${key}\u0000${name}`) });
    scored.sort((a, b) => (better(a, b) ? -1 : 1));
    return scored.slice(0, count);
  }

  /** Starts the grace period of reports whose reporter no longer owns the backend; ends it for owners. */
  private updateReports(keys: Iterable<string>): void {
    const now = this.options.clock.now();
    for (const key of keys) {
      const perNode = this.reports.get(key);
      if (!perNode) continue;
      const owners = this.owners(key);
      for (const [node, r] of perNode) {
        if (owners.includes(node)) r.expiresAt = null;
        else if (r.expiresAt === null) {
          r.expiresAt = now + this.options.graceMs;
          this.scheduleExpiry(r.expiresAt);
        }
      }
    }
  }

  /** Tells the given connected agents their assignment, when it changed. */
  private notify(nodes: Iterable<string>): void {
    for (const node of nodes) {
      if (!this.connected.has(node)) continue;
      const refs = this.assignment(node);
      const signature = refs.map((r) => `${r.service}|${r.address}|${r.port}`).join(',');
      if (this.lastAssignment.get(node) !== signature) {
        this.lastAssignment.set(node, signature);
        this.options.onAssignment(node, refs);
      }
    }
  }

  private scheduleExpiry(at: number): void {
    if (at >= this.expiryAt) return;
    if (this.expiryTimer !== null) this.options.clock.clearTimeout(this.expiryTimer);
    this.expiryAt = at;
    this.expiryTimer = this.options.clock.setTimeout(
      () => this.expire(),
      Math.max(0, at - this.options.clock.now()),
    );
  }

  private expire(): void {
    this.expiryTimer = null;
    this.expiryAt = Number.POSITIVE_INFINITY;
    const now = this.options.clock.now();
    const changed = new Set<string>();
    let next = Number.POSITIVE_INFINITY;
    for (const [key, perNode] of this.reports) {
      for (const [node, r] of perNode) {
        if (r.expiresAt === null) continue;
        if (r.expiresAt <= now) {
          perNode.delete(node);
          const info = this.backends.get(key);
          if (info) changed.add(info.serviceKey);
        } else if (r.expiresAt < next) next = r.expiresAt;
      }
      if (perNode.size === 0) this.reports.delete(key);
    }
    if (next !== Number.POSITIVE_INFINITY) this.scheduleExpiry(next);
    if (changed.size > 0) this.options.onChange(changed);
  }

  /** Stops the expiry timer (on shutdown). */
  close(): void {
    if (this.expiryTimer !== null) this.options.clock.clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
  }
}
