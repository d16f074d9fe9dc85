import { normaliseIp } from './catalog/address';
import { type Backend, backendId, type Catalog } from './catalog/types';
import type { Clock } from './clock';
import {
  type BackendHealth,
  fromWireHealth,
  type HealthState,
  type WireBackendRef,
  type WireHealthResult,
} from './protocol';
import { rendezvousOwners } from './rendezvous';

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
  private readonly backends = new Map<string, BackendInfo>();
  private readonly byNode = new Map<string, WireBackendRef[]>();
  private readonly externals: string[] = [];
  private readonly externalOwners = new Map<string, readonly string[]>();
  private readonly connected = new Set<string>();
  private readonly reports = new Map<string, Map<string, Report>>();
  private readonly lastAssignment = new Map<string, string>();
  private expiryTimer: unknown = null;
  private expiryAt = Number.POSITIVE_INFINITY;

  constructor(private readonly options: HealthAggregatorOptions) {}

  setCatalog(catalog: Catalog): void {
    this.backends.clear();
    this.byNode.clear();
    this.externals.length = 0;
    for (const service of catalog.services) {
      for (const b of service.backends) {
        const key = backendKey(service.key, b);
        const ref = { service: service.key, address: b.address, port: b.port ?? 0 };
        this.backends.set(key, {
          serviceKey: service.key,
          ref,
          node: b.node,
          checked: service.healthCheck !== null,
        });
        if (service.healthCheck === null) continue;
        if (b.node === null) this.externals.push(key);
        else {
          const list = this.byNode.get(b.node);
          if (list) list.push(ref);
          else this.byNode.set(b.node, [ref]);
        }
      }
    }
    for (const key of this.reports.keys()) if (!this.backends.get(key)?.checked) this.reports.delete(key);
    this.reassign();
  }

  agentConnected(node: string): void {
    this.connected.add(node);
    this.reassign();
  }

  agentDisconnected(node: string): void {
    this.connected.delete(node);
    this.lastAssignment.delete(node);
    this.reassign();
  }

  /** Current owners of a backend (connected agents only). */
  owners(key: string): readonly string[] {
    const info = this.backends.get(key);
    if (!info?.checked) return [];
    if (info.node !== null) return this.connected.has(info.node) ? [info.node] : [];
    return this.externalOwners.get(key) ?? [];
  }

  /** The backends a node's agent must probe now. */
  assignment(node: string): WireBackendRef[] {
    const refs = [...(this.byNode.get(node) ?? [])];
    for (const key of this.externals) {
      if (this.externalOwners.get(key)?.includes(node)) refs.push(this.backends.get(key)!.ref);
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

  /** Recomputes external owners, starts or stops report grace periods, tells agents whose assignment changed. */
  private reassign(): void {
    this.externalOwners.clear();
    const candidates = [...this.connected];
    const count = this.options.externalOwners ?? 2;
    for (const key of this.externals) this.externalOwners.set(key, rendezvousOwners(key, candidates, count));

    const now = this.options.clock.now();
    for (const [key, perNode] of this.reports) {
      const owners = this.owners(key);
      for (const [node, r] of perNode) {
        if (owners.includes(node)) r.expiresAt = null;
        else r.expiresAt ??= now + this.options.graceMs;
      }
    }
    this.scheduleExpiry();

    for (const node of this.connected) {
      const refs = this.assignment(node);
      const signature = refs.map((r) => `${r.service}|${r.address}|${r.port}`).join(',');
      if (this.lastAssignment.get(node) !== signature) {
        this.lastAssignment.set(node, signature);
        this.options.onAssignment(node, refs);
      }
    }
  }

  private scheduleExpiry(): void {
    let next = Number.POSITIVE_INFINITY;
    for (const perNode of this.reports.values())
      for (const r of perNode.values()) if (r.expiresAt !== null && r.expiresAt < next) next = r.expiresAt;
    if (next === this.expiryAt) return;
    if (this.expiryTimer !== null) this.options.clock.clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    this.expiryAt = next;
    if (next === Number.POSITIVE_INFINITY) return;
    const delay = Math.max(0, next - this.options.clock.now());
    this.expiryTimer = this.options.clock.setTimeout(() => this.expire(), delay);
  }

  private expire(): void {
    this.expiryTimer = null;
    this.expiryAt = Number.POSITIVE_INFINITY;
    const now = this.options.clock.now();
    const changed = new Set<string>();
    for (const [key, perNode] of this.reports) {
      for (const [node, r] of perNode) {
        if (r.expiresAt !== null && r.expiresAt <= now) {
          perNode.delete(node);
          const info = this.backends.get(key);
          if (info) changed.add(info.serviceKey);
        }
      }
      if (perNode.size === 0) this.reports.delete(key);
    }
    this.scheduleExpiry();
    if (changed.size > 0) this.options.onChange(changed);
  }

  /** Stops the expiry timer (on shutdown). */
  close(): void {
    if (this.expiryTimer !== null) this.options.clock.clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
  }
}
