/**
 * Every Prometheus metric the agent exports, in one place, on an injected registry (never the global).
 * Names carry the `sluice_` prefix and follow Prometheus conventions (`_total` counters, base units:
 * seconds). Process metrics (process_*, nodejs_*) keep their standard unprefixed names so stock
 * dashboards work.
 *
 * Labels: `service` is `namespace/name`, `backend` is `address:port` (IPv6 as `[addr]:port`).
 * The kernel keeps cumulative per-backend counters; observeBackendCounters() turns successive readings
 * into counter increments (a reading lower than the last one means the map was recreated: the new
 * value counts from zero).
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, type Registry } from 'prom-client';
import { XdpReasons } from './abi/xdp';
import type { FastPathCounters } from './fastpath/fastpath';
import { FASTPATH_MODES, type FastPathMode } from './fastpath/settings';
import type { XdpLbStats } from './xdp/datapath';

export type HealthState = 'healthy' | 'unhealthy' | 'unknown';
export const HEALTH_STATES: readonly HealthState[] = ['healthy', 'unhealthy', 'unknown'];
export type ControllerState = 'connecting' | 'connected' | 'disconnected' | 'standalone';
export const CONTROLLER_STATES: readonly ControllerState[] = [
  'connecting',
  'connected',
  'disconnected',
  'standalone',
];
export type SyncKind = 'snapshot' | 'delta' | 'health' | 'reconcile';

/** Cumulative counters for one backend as read from the datapath. */
export interface BackendCounters {
  readonly connects: number;
  readonly connectFailures: number;
  readonly activeConnections: number;
  readonly ejections: number;
}

export interface AgentMetricsOptions {
  /** Register process_* and nodejs_* metrics (default true). */
  readonly processMetrics?: boolean;
}

type CounterKey = 'connects' | 'connectFailures' | 'ejections';

/** Why a connection direction left the fast path: the `reason` label of sluice_fastpath_fallbacks_total. */
const FASTPATH_FALLBACK_REASONS = {
  no_peer: 'fallbackNoPeer',
  backpressure: 'fallbackBackpressure',
  disabled: 'fallbackDisabled',
  policy: 'fallbackPolicy',
  blocking: 'fallbackBlocking',
  streaming: 'fallbackStreaming',
  redirect_error: 'redirectErrors',
} as const satisfies Record<string, keyof FastPathCounters>;

const PROBE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const SYNC_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
];

export class AgentMetrics {
  readonly connects: Counter<'service' | 'backend'>;
  readonly connectFailures: Counter<'service' | 'backend'>;
  readonly activeConnections: Gauge<'service' | 'backend'>;
  readonly ejections: Counter<'service' | 'backend'>;
  readonly backendHealth: Gauge<'service' | 'backend' | 'state' | 'reason'>;
  readonly probeDuration: Histogram<'service' | 'protocol'>;
  readonly probeFailures: Counter<'service' | 'backend' | 'protocol'>;
  readonly mapEntries: Gauge<'map'>;
  readonly mapCapacity: Gauge<'map'>;
  readonly syncDuration: Histogram<'kind'>;
  readonly controllerState: Gauge<'state'>;
  readonly appliedVersion: Gauge;
  readonly catalogUpdates: Counter<'result'>;
  readonly fastPathMode: Gauge<'mode'>;
  readonly fastPathEndpoints: Gauge;
  readonly fastPathRedirectedMessages: Counter;
  readonly fastPathRedirectedBytes: Counter;
  readonly fastPathFallbackMessages: Counter;
  readonly fastPathFallbackBytes: Counter;
  readonly fastPathFallbacks: Counter<'reason'>;
  readonly fastPathInserts: Counter;
  readonly fastPathInsertFailures: Counter;
  readonly xdpMode: Gauge<'mode'>;
  readonly xdpVipPackets: Counter<'vip' | 'port' | 'protocol'>;
  readonly xdpVipBytes: Counter<'vip' | 'port' | 'protocol'>;
  readonly xdpBackendPackets: Counter<'backend'>;
  readonly xdpBackendBytes: Counter<'backend'>;
  readonly xdpVerdicts: Counter<'reason' | 'verdict'>;

  /** Last kernel readings of the XDP counters by series, for counter deltas. */
  private readonly lastXdp = new Map<string, bigint>();

  /** Last kernel reading of the fast path counters, for counter deltas. */
  private lastFastPath: FastPathCounters | undefined;

  /** Last kernel readings per `service\0backend`, for counter deltas. */
  private readonly lastCounters = new Map<string, Record<CounterKey, number>>();
  /** Current health labels per `service\0backend`, so exactly one health series exists per backend. */
  private readonly healthLabels = new Map<string, { state: HealthState; reason: string }>();
  /** Backends seen per service, for removeService(). */
  private readonly backendsOf = new Map<string, Set<string>>();

  constructor(
    readonly registry: Registry,
    options: AgentMetricsOptions = {},
  ) {
    const registers = [registry];
    const sb = ['service', 'backend'] as const;
    this.connects = new Counter({
      name: 'sluice_backend_connects_total',
      help: 'Connects steered to the backend by the socket load balancer.',
      labelNames: sb,
      registers,
    });
    this.connectFailures = new Counter({
      name: 'sluice_backend_connect_failures_total',
      help: 'Connects to the backend that failed (refused or timed out), as seen by sockops.',
      labelNames: sb,
      registers,
    });
    this.activeConnections = new Gauge({
      name: 'sluice_backend_active_connections',
      help: 'Established connections to the backend.',
      labelNames: sb,
      registers,
    });
    this.ejections = new Counter({
      name: 'sluice_backend_ejections_total',
      help: 'Times passive outlier detection ejected the backend.',
      labelNames: sb,
      registers,
    });
    this.backendHealth = new Gauge({
      name: 'sluice_backend_health',
      help: 'Health of the backend: 1 on the series with its current state and the reason for it.',
      labelNames: [...sb, 'state', 'reason'],
      registers,
    });
    this.probeDuration = new Histogram({
      name: 'sluice_health_probe_duration_seconds',
      help: 'Duration of active health probes, successful or not.',
      labelNames: ['service', 'protocol'],
      buckets: PROBE_BUCKETS,
      registers,
    });
    this.probeFailures = new Counter({
      name: 'sluice_health_probe_failures_total',
      help: 'Active health probes that failed (bad status, refused, timed out).',
      labelNames: [...sb, 'protocol'],
      registers,
    });
    this.mapEntries = new Gauge({
      name: 'sluice_map_entries',
      help: 'Entries in a pinned BPF map.',
      labelNames: ['map'],
      registers,
    });
    this.mapCapacity = new Gauge({
      name: 'sluice_map_capacity',
      help: 'Maximum entries of a pinned BPF map.',
      labelNames: ['map'],
      registers,
    });
    this.syncDuration = new Histogram({
      name: 'sluice_datapath_sync_duration_seconds',
      help: 'Time to apply a change to the datapath maps.',
      labelNames: ['kind'],
      buckets: SYNC_BUCKETS,
      registers,
    });
    this.controllerState = new Gauge({
      name: 'sluice_controller_connection_state',
      help: 'State of the connection to the controller: 1 on the current state.',
      labelNames: ['state'],
      registers,
    });
    this.appliedVersion = new Gauge({
      name: 'sluice_catalog_applied_version',
      help: 'Version of the catalog last applied to the datapath.',
      registers,
    });
    this.catalogUpdates = new Counter({
      name: 'sluice_catalog_updates_total',
      help: 'Catalog snapshots and deltas received, by result (ack or nack).',
      labelNames: ['result'],
      registers,
    });
    this.fastPathMode = new Gauge({
      name: 'sluice_fastpath_mode',
      help: 'Same-node fast path setting in effect (off, mesh, all): 1 on the current mode.',
      labelNames: ['mode'],
      registers,
    });
    this.fastPathEndpoints = new Gauge({
      name: 'sluice_fastpath_endpoints',
      help: 'Node-local mesh endpoints whose connections may take the fast path (scope mesh).',
      registers,
    });
    this.fastPathRedirectedMessages = new Counter({
      name: 'sluice_fastpath_redirected_messages_total',
      help: 'Sends handed straight to the peer socket by the same-node fast path.',
      registers,
    });
    this.fastPathRedirectedBytes = new Counter({
      name: 'sluice_fastpath_redirected_bytes_total',
      help: 'Bytes handed straight to the peer socket by the same-node fast path.',
      registers,
    });
    this.fastPathFallbackMessages = new Counter({
      name: 'sluice_fastpath_fallback_messages_total',
      help: 'Sends of sockets in the fast path map that took the normal TCP path.',
      registers,
    });
    this.fastPathFallbackBytes = new Counter({
      name: 'sluice_fastpath_fallback_bytes_total',
      help: 'Bytes of sockets in the fast path map that took the normal TCP path.',
      registers,
    });
    this.fastPathFallbacks = new Counter({
      name: 'sluice_fastpath_fallbacks_total',
      help: 'Connection directions that moved to the normal TCP path for good, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.fastPathInserts = new Counter({
      name: 'sluice_fastpath_inserts_total',
      help: 'Sockets put into the fast path map.',
      registers,
    });
    this.fastPathInsertFailures = new Counter({
      name: 'sluice_fastpath_insert_failures_total',
      help: 'Eligible sockets that could not join the fast path map (full map): they take the normal path.',
      registers,
    });
    this.xdpMode = new Gauge({
      name: 'sluice_xdp_mode',
      help: 'XDP load balancer attachment (off, native, generic): 1 on the current mode.',
      labelNames: ['mode'],
      registers,
    });
    const vipLabels = ['vip', 'port', 'protocol'] as const;
    this.xdpVipPackets = new Counter({
      name: 'sluice_xdp_vip_packets_total',
      help: 'Packets the XDP load balancer forwarded for the external IP:port.',
      labelNames: vipLabels,
      registers,
    });
    this.xdpVipBytes = new Counter({
      name: 'sluice_xdp_vip_bytes_total',
      help: 'Bytes (before encapsulation) the XDP load balancer forwarded for the external IP:port.',
      labelNames: vipLabels,
      registers,
    });
    this.xdpBackendPackets = new Counter({
      name: 'sluice_xdp_backend_packets_total',
      help: 'Packets the XDP load balancer encapsulated to the backend.',
      labelNames: ['backend'],
      registers,
    });
    this.xdpBackendBytes = new Counter({
      name: 'sluice_xdp_backend_bytes_total',
      help: 'Bytes (before encapsulation) the XDP load balancer sent to the backend.',
      labelNames: ['backend'],
      registers,
    });
    this.xdpVerdicts = new Counter({
      name: 'sluice_xdp_packets_total',
      help: 'Packets seen by the XDP load balancer, by verdict (pass, tx, drop) and the reason for it.',
      labelNames: ['reason', 'verdict'],
      registers,
    });
    this.setXdpMode('off');
    this.setFastPathMode('off');
    this.setControllerState('disconnected');
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry });
  }

  private track(service: string, backend: string): string {
    let set = this.backendsOf.get(service);
    if (!set) {
      set = new Set();
      this.backendsOf.set(service, set);
    }
    set.add(backend);
    return `${service}\0${backend}`;
  }

  /** Feeds a cumulative reading of a backend's kernel counters. */
  observeBackendCounters(service: string, backend: string, counters: BackendCounters): void {
    const key = this.track(service, backend);
    const last = this.lastCounters.get(key) ?? { connects: 0, connectFailures: 0, ejections: 0 };
    const labels = { service, backend };
    const add = (counter: Counter<'service' | 'backend'>, field: CounterKey) => {
      const value = counters[field];
      const delta = value >= last[field] ? value - last[field] : value;
      // inc(0) creates the series, so a backend shows up with 0 before its first connect.
      counter.inc(labels, delta);
    };
    add(this.connects, 'connects');
    add(this.connectFailures, 'connectFailures');
    add(this.ejections, 'ejections');
    this.activeConnections.set(labels, counters.activeConnections);
    this.lastCounters.set(key, {
      connects: counters.connects,
      connectFailures: counters.connectFailures,
      ejections: counters.ejections,
    });
  }

  /** Moves the backend's single health series to the new state and reason. */
  setBackendHealth(service: string, backend: string, state: HealthState, reason: string): void {
    const key = this.track(service, backend);
    const previous = this.healthLabels.get(key);
    if (previous?.state === state && previous.reason === reason) return;
    if (previous) this.backendHealth.remove({ service, backend, ...previous });
    this.backendHealth.set({ service, backend, state, reason }, 1);
    this.healthLabels.set(key, { state, reason });
  }

  observeProbe(
    service: string,
    backend: string,
    protocol: string,
    durationSeconds: number,
    ok: boolean,
  ): void {
    this.track(service, backend);
    this.probeDuration.observe({ service, protocol }, durationSeconds);
    if (!ok) this.probeFailures.inc({ service, backend, protocol });
  }

  setMapUsage(map: string, entries: number, capacity: number): void {
    this.mapEntries.set({ map }, entries);
    this.mapCapacity.set({ map }, capacity);
  }

  observeSync(kind: SyncKind, durationSeconds: number): void {
    this.syncDuration.observe({ kind }, durationSeconds);
  }

  setControllerState(state: ControllerState): void {
    for (const s of CONTROLLER_STATES) this.controllerState.set({ state: s }, s === state ? 1 : 0);
  }

  catalogApplied(version: number | bigint, result: 'ack' | 'nack'): void {
    this.catalogUpdates.inc({ result });
    if (result === 'ack') this.appliedVersion.set(Number(version));
  }

  setFastPathMode(mode: FastPathMode): void {
    for (const m of FASTPATH_MODES) this.fastPathMode.set({ mode: m }, m === mode ? 1 : 0);
  }

  setFastPathEndpoints(count: number): void {
    this.fastPathEndpoints.set(count);
  }

  /**
   * Feeds a cumulative reading of the fast path's kernel counters (summed over CPUs). A reading lower than
   * the last one means the map was recreated: the new value counts from zero.
   */
  observeFastPathCounters(counters: FastPathCounters): void {
    const last = this.lastFastPath;
    const delta = (key: keyof FastPathCounters): number => {
      const value = counters[key];
      const before = last?.[key] ?? 0n;
      return Number(value >= before ? value - before : value);
    };
    this.fastPathRedirectedMessages.inc(delta('redirectedMsgs'));
    this.fastPathRedirectedBytes.inc(delta('redirectedBytes'));
    this.fastPathFallbackMessages.inc(delta('fallbackMsgs'));
    this.fastPathFallbackBytes.inc(delta('fallbackBytes'));
    this.fastPathInserts.inc(delta('inserts'));
    this.fastPathInsertFailures.inc(delta('insertFailures'));
    for (const [reason, key] of Object.entries(FASTPATH_FALLBACK_REASONS)) {
      this.fastPathFallbacks.inc({ reason }, delta(key));
    }
    this.lastFastPath = { ...counters };
  }

  setXdpMode(mode: 'off' | 'native' | 'generic'): void {
    for (const m of ['off', 'native', 'generic']) this.xdpMode.set({ mode: m }, m === mode ? 1 : 0);
  }

  /** Feeds a cumulative reading of the XDP load balancer's counters. */
  observeXdpStats(stats: XdpLbStats): void {
    const add = (series: string, counter: Counter<string>, labels: Record<string, string>, value: bigint) => {
      const key = `${series}\0${Object.values(labels).join('\0')}`;
      const before = this.lastXdp.get(key) ?? 0n;
      // A smaller value means the kernel counter restarted (map recreated): count it from zero.
      counter.inc(labels, Number(value >= before ? value - before : value));
      this.lastXdp.set(key, value);
    };
    for (const vip of stats.vips) {
      const labels = { vip: vip.address, port: String(vip.port), protocol: vip.protocol };
      add('vip packets', this.xdpVipPackets, labels, vip.packets);
      add('vip bytes', this.xdpVipBytes, labels, vip.bytes);
    }
    for (const backend of stats.backends) {
      add('backend packets', this.xdpBackendPackets, { backend: backend.address }, backend.packets);
      add('backend bytes', this.xdpBackendBytes, { backend: backend.address }, backend.bytes);
    }
    for (const reason of XdpReasons) {
      add(
        'verdicts',
        this.xdpVerdicts,
        { reason: reason.name, verdict: reason.verdict },
        stats.verdicts[reason.name].packets,
      );
    }
  }

  /** Deletes every series of one backend (it left the service). Idempotent. */
  removeBackend(service: string, backend: string): void {
    const key = `${service}\0${backend}`;
    const labels = { service, backend };
    this.connects.remove(labels);
    this.connectFailures.remove(labels);
    this.activeConnections.remove(labels);
    this.ejections.remove(labels);
    const health = this.healthLabels.get(key);
    if (health) this.backendHealth.remove({ ...labels, ...health });
    // Probe failures carry a protocol label: drop every series of this backend whatever the protocol.
    for (const protocol of ['tcp', 'http', 'grpc']) this.probeFailures.remove({ ...labels, protocol });
    this.healthLabels.delete(key);
    this.lastCounters.delete(key);
    this.backendsOf.get(service)?.delete(backend);
  }

  /** Deletes every series of a service and its backends. Idempotent. */
  removeService(service: string): void {
    for (const backend of [...(this.backendsOf.get(service) ?? [])]) this.removeBackend(service, backend);
    this.backendsOf.delete(service);
    for (const protocol of ['tcp', 'http', 'grpc']) this.probeDuration.remove({ service, protocol });
  }
}

/** The `backend` label for an address and port. */
export function backendLabel(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}
