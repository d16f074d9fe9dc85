/**
 * The node agent's sync loop: turns the catalog (from the controller or a file), the health of each
 * backend and the kernel's passive ejections into the services this node programs, and writes them
 * through a DataplaneSink (the datapath writer).
 *
 * Concurrency contract: every write goes through one serial queue, so the datapath sees one apply at a
 * time in the order the causes arrived. A catalog update resolves with ACK or NACK after its own write;
 * health transitions and ejection changes mark the plan dirty and coalesce into the next write, which is
 * queued at once (no timer), so a backend that turns unhealthy leaves selection as soon as the write lands.
 *
 * Static stability: nothing here depends on the controller being reachable. The last good catalog stays
 * programmed, health checks keep running and their transitions keep being applied; a reconnect delivers a
 * new snapshot through applyCatalog like any other.
 */
import type { Logger } from 'pino';
import type { Backend, Catalog, Protocol, Service } from '../controller/catalog';
import {
  datapathChange,
  dirtyServices,
  type ProgrammedServiceRef,
  remoteHealthChanges,
  serviceOfHealthKey,
} from './agent-sync';
import type { HealthScheduler, HealthTransition, ProbeResult } from './health/scheduler';
import { probeTargets as catalogProbeTargets, refKey } from './health/targets';
import type { ProbeTarget } from './health/types';
import { type BackendHealth, chooseBackends, type LocalityTier } from './locality';
import { type AgentMetrics, backendLabel } from './metrics';

/** A backend as programmed for one service port. */
export interface ProgrammedBackend {
  /** The backend's identity in the catalog (healthKey): `namespace/name|address:port`. */
  readonly id: string;
  readonly address: string;
  /** The port connections go to (the backend's own port, else the service port's targetPort). */
  readonly port: number;
  readonly weight: number;
  /** Runs on this node. */
  readonly local: boolean;
  /**
   * Kept in the service for the sockets already connected to it, never chosen for new connects: the
   * backend is unhealthy, ejected, or outside the locality tier in use.
   */
  readonly draining: boolean;
}

/** One VIP:port/protocol of a service, with the backends this node selects among. */
export interface ProgrammedService {
  /** namespace/name */
  readonly service: string;
  readonly vip: string;
  /** The address is one of the service's externalIPs (the XDP load balancer takes it too), not a VIP. */
  readonly external?: boolean;
  readonly port: number;
  readonly protocol: Protocol;
  readonly algorithm: Service['algorithm'];
  /** Client affinity timeout in ms, null when affinity is off. */
  readonly affinityTimeoutMs: number | null;
  readonly outlier: Service['outlierDetection'];
  readonly backends: readonly ProgrammedBackend[];
}

/** A backend's live kernel state for one service port, as read back from the maps. */
export interface KernelBackendStatus {
  readonly vip: string;
  readonly port: number;
  readonly protocol: string;
  readonly address: string;
  readonly backendPort: number;
  readonly ejected: boolean;
  readonly ejectedForMs: number;
  readonly consecutiveFailures: number;
  readonly consecutiveEjections: number;
  readonly ejections: number;
  readonly connects: number;
  readonly connectFailures: number;
  readonly activeConnections: number;
}

/** Only some services changed: what an incremental write hands the sink. */
export interface DataplaneChange {
  /** Services added or replaced whole. */
  readonly upsert: readonly ProgrammedService[];
  /** Services no longer programmed (never one also in upsert). */
  readonly remove: readonly ProgrammedServiceRef[];
  /** Every service programmed once the change has landed (what apply() would have been given). */
  services(): readonly ProgrammedService[];
}

/** The agent's view of the datapath writer (see datapath-sink.ts for the adapters). */
export interface DataplaneSink {
  /** Makes the datapath hold exactly these services. Throws (with a reason) and changes nothing on error. */
  apply(services: readonly ProgrammedService[]): Promise<void> | void;
  /**
   * Changes only the listed services, leaving every other one as it is; throws (with a reason) and
   * changes nothing on a bad input or a capacity limit. Optional: without it every write is an apply().
   */
  update?(change: DataplaneChange): Promise<void> | void;
  /** Per-backend kernel state; empty when the sink has no kernel behind it. */
  readStatus(): readonly KernelBackendStatus[];
  /** Entries against capacity of each map (hash maps; arrays are preallocated), when there are maps. */
  mapUsage?(): readonly { name: string; entries: number; capacity: number }[];
}

/** The controller side, as the agent needs it; absent in standalone mode. */
export interface ControllerReporter {
  reportHealth(results: readonly HealthReport[]): void;
  /** A kernel ejection started (`reason` set) or ended (`reason` null) for one backend of one service port. */
  reportEjection?(service: string, status: KernelBackendStatus, reason: string | null): void;
}

export interface HealthReport {
  readonly service: string;
  readonly address: string;
  /** The backend's own port override, 0 when it has none. */
  readonly port: number;
  readonly state: BackendHealth;
  readonly reason: string;
}

/** Health as another party (the controller) reports it, keyed by healthKey(). */
export type RemoteHealth = ReadonlyMap<string, { readonly state: BackendHealth; readonly reason: string }>;

export interface CatalogUpdate {
  readonly version: bigint;
  readonly catalog: Catalog;
  /** Health merged by the controller (for backends this node does not probe itself). */
  readonly health?: RemoteHealth | undefined;
}

export type ApplyResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** Which backends this agent probes. Standalone: all; controller mode: the controller's assignment. */
export type ProbeOwnership = (service: string, backend: Backend) => boolean;

export interface NodeAgentOptions {
  readonly node: string;
  readonly zone?: string | undefined;
  readonly sink: DataplaneSink;
  readonly health: HealthScheduler;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  readonly reporter?: ControllerReporter | undefined;
  /** Default: this agent probes every backend whose node is this node, and every backend in standalone. */
  readonly owns?: ProbeOwnership;
  readonly panicThreshold?: number;
  /** How often the kernel's per-backend state is read back (default 1000 ms). */
  readonly pollIntervalMs?: number;
  /**
   * How often the whole plan is written again (a full apply, the safety net under the incremental
   * writes; default 300 000 ms, 0: never, only at start-up, after a failed write and on reconcile()).
   */
  readonly reconcileIntervalMs?: number;
  readonly now?: () => number;
}

/** Identity of a backend within a service, for health and ejection bookkeeping. */
export function healthKey(service: string, backend: Pick<Backend, 'address' | 'port'>): string {
  return refKey({ service, address: backend.address, port: backend.port });
}

/** The port connections to this backend go to, for a service port. */
export function backendPort(backend: Backend, targetPort: number): number {
  return backend.port ?? targetPort;
}

function kernelKey(vip: string, port: number, protocol: string, address: string, bport: number): string {
  return `${vip}|${port}|${protocol}|${address}|${bport}`;
}

/** The inputs of a plan besides the catalog. */
export interface PlanContext {
  readonly node: string;
  readonly zone?: string | undefined;
  readonly health: (service: string, backend: Backend) => BackendHealth;
  readonly ejected: (service: string, backend: Backend) => boolean;
  readonly panicThreshold?: number | undefined;
}

export interface LocalityChoice {
  readonly tier: LocalityTier;
  readonly panic: boolean;
  readonly trail: readonly string[];
}

/**
 * One catalog service's programmed entries (one per VIP × port) and its locality choice: a pure function
 * of the service, its backends' health and ejection, and this node's locality.
 */
export function planService(
  service: Service,
  input: PlanContext,
): { services: ProgrammedService[]; choice: LocalityChoice } {
  const annotated = service.backends.map((backend) => ({
    backend,
    node: backend.node ?? undefined,
    zone: backend.zone ?? undefined,
    weight: backend.weight,
    health: input.health(service.key, backend),
    ejected: input.ejected(service.key, backend),
  }));
  const choice = chooseBackends({
    backends: annotated,
    trafficDistribution: service.trafficDistribution,
    node: input.node,
    zone: input.zone,
    panicThreshold: input.panicThreshold,
  });
  const chosen = new Set(choice.backends);
  const services: ProgrammedService[] = [];
  // External IPs are programmed like VIPs (clients on this node reach them through socket-LB, as with
  // kube-proxy) and flagged for the XDP load balancer, which takes the traffic arriving from outside.
  const addresses = [
    ...service.vips.map((vip) => ({ vip, external: false })),
    ...service.externalIPs.map((vip) => ({ vip, external: true })),
  ];
  for (const { vip, external } of addresses) {
    for (const port of service.ports) {
      services.push({
        service: service.key,
        vip,
        ...(external ? { external } : {}),
        port: port.port,
        protocol: port.protocol,
        algorithm: service.algorithm,
        affinityTimeoutMs: service.affinity.mode === 'client' ? service.affinity.timeoutMs : null,
        outlier: service.outlierDetection,
        backends: annotated
          // An IPv4 VIP balances to IPv4 backends and an IPv6 VIP to IPv6 ones; weight 0 is drained.
          .filter((b) => b.weight > 0 && b.backend.address.includes(':') === vip.includes(':'))
          .map((b) => ({
            id: healthKey(service.key, b.backend),
            address: b.backend.address,
            port: backendPort(b.backend, port.targetPort),
            weight: b.backend.weight,
            local: b.backend.node === input.node,
            draining: !chosen.has(b),
          })),
      });
    }
  }
  return { services, choice: { tier: choice.tier, panic: choice.panic, trail: choice.trail } };
}

/**
 * The services to program: a pure function of the catalog, each backend's health and ejection, and this
 * node's locality. One entry per address (VIP or external IP) × port.
 */
export function planServices(input: PlanContext & { readonly catalog: Catalog }): {
  services: ProgrammedService[];
  choices: Map<string, LocalityChoice>;
} {
  const services: ProgrammedService[] = [];
  const choices = new Map<string, LocalityChoice>();
  for (const service of input.catalog.services) {
    const planned = planService(service, input);
    choices.set(service.key, planned.choice);
    for (const s of planned.services) services.push(s);
  }
  return { services, choices };
}

/** Active health-check targets for the backends this node probes (agent/health/targets.ts). */
export function probeTargets(catalog: Catalog, owns: ProbeOwnership): ProbeTarget[] {
  return catalogProbeTargets(catalog.services, (service, backend) => owns(service.key, backend));
}

interface EjectionMemory {
  ejections: number;
  ejected: boolean;
}

export class NodeAgent {
  private catalog: Catalog | undefined;
  private version = 0n;
  private remoteHealth: RemoteHealth = new Map();
  /** Local probe results, by healthKey. */
  private readonly localHealth = new Map<string, { state: BackendHealth; reason: string }>();
  /** Kernel ejection state by healthKey (ejected in any of the service's ports). */
  private readonly ejectedNow = new Set<string>();
  private readonly kernelMemory = new Map<string, EjectionMemory>();
  /** kernelKey → {service, backend label, healthKey} for what is programmed. */
  private kernelIndex = new Map<string, { service: string; label: string; key: string }>();
  private programmedLabels = new Map<string, Set<string>>();
  private lastChoices = new Map<string, string>();
  /** The services the last write planned again or removed; undefined after a full write. */
  private lastWritten: Set<string> | undefined;
  /** What the datapath holds, by catalog service, and the catalog it was planned from. */
  private programmed = new Map<string, readonly ProgrammedService[]>();
  private programmedCatalog: Catalog | undefined;
  /** Services whose backends' health or ejection changed since the last write. */
  private touched = new Set<string>();
  /** The next write plans everything and applies it whole (start-up, after a failure, reconcile). */
  private needFull = true;
  private chain: Promise<unknown> = Promise.resolve();
  private dirty = false;
  private poller: NodeJS.Timeout | undefined;
  private reconciler: NodeJS.Timeout | undefined;
  private readonly unsubscribe: Array<() => void> = [];
  private readonly log: Logger;
  private owns: ProbeOwnership;
  private reporter: ControllerReporter | undefined;
  private readonly appliedListeners = new Set<(catalog: Catalog, version: bigint) => void>();

  constructor(private readonly options: NodeAgentOptions) {
    this.log = options.log;
    this.owns = options.owns ?? ((_, backend) => backend.node === options.node);
    this.reporter = options.reporter;
    this.unsubscribe.push(
      options.health.onTransition((t) => this.onTransition(t)),
      options.health.onResult((r) => this.onProbeResult(r)),
    );
  }

  get appliedVersion(): bigint {
    return this.version;
  }

  get currentCatalog(): Catalog | undefined {
    return this.catalog;
  }

  /** Where health transitions are reported (the controller link, once connected). */
  setReporter(reporter: ControllerReporter | undefined): void {
    this.reporter = reporter;
  }

  /** Changes which backends this agent probes (the controller's assignment) and updates the probes. */
  setOwnership(owns: ProbeOwnership): void {
    this.owns = owns;
    if (this.catalog) this.options.health.setTargets(probeTargets(this.catalog, owns));
  }

  /** Called after every applied catalog version (DNS zone, logs). */
  onApplied(listener: (catalog: Catalog, version: bigint) => void): () => void {
    this.appliedListeners.add(listener);
    return () => this.appliedListeners.delete(listener);
  }

  start(): void {
    this.options.health.start();
    const interval = this.options.pollIntervalMs ?? 1000;
    this.poller = setInterval(() => this.pollKernel(), interval);
    this.poller.unref();
    const every = this.options.reconcileIntervalMs ?? 300_000;
    if (every > 0) {
      this.reconciler = setInterval(() => {
        this.reconcile().catch((error) => this.log.error({ err: error }, 'periodic reconcile failed'));
      }, every);
      this.reconciler.unref();
    }
  }

  /**
   * Plans every service and writes the whole set (the datapath diffs it against the maps): the safety net
   * under the incremental writes. Queued like any other write.
   */
  reconcile(): Promise<void> {
    return this.enqueue(() => this.write('reconcile'));
  }

  /** Stops probing and polling; the datapath keeps its state (the pins hold it). */
  async stop(): Promise<void> {
    if (this.poller) clearInterval(this.poller);
    if (this.reconciler) clearInterval(this.reconciler);
    for (const off of this.unsubscribe.splice(0)) off();
    await this.options.health.stop();
    await this.chain.catch(() => undefined);
  }

  /**
   * Applies a catalog version. Resolves ok (ACK) once the datapath holds it, or with the reason (NACK)
   * after putting the last good state back.
   */
  applyCatalog(update: CatalogUpdate): Promise<ApplyResult> {
    return this.enqueue(async () => {
      const started = performance.now();
      const previous = { catalog: this.catalog, remote: this.remoteHealth };
      this.catalog = update.catalog;
      this.remoteHealth = update.health ?? new Map();
      for (const service of remoteHealthChanges(previous.remote, this.remoteHealth))
        this.touched.add(service);
      try {
        await this.write('snapshot');
      } catch (error) {
        const reason = (error as Error).message;
        this.catalog = previous.catalog;
        this.remoteHealth = previous.remote;
        this.options.metrics.catalogApplied(update.version, 'nack');
        this.log.error(
          { version: String(update.version), err: error },
          'catalog rejected, keeping the last good state',
        );
        if (previous.catalog) {
          try {
            await this.write('reconcile');
          } catch (restoreError) {
            this.log.error({ err: restoreError }, 'could not restore the last good state');
          }
        }
        return { ok: false as const, reason };
      }
      this.version = update.version;
      this.options.health.setTargets(probeTargets(update.catalog, this.owns));
      this.forgetRemoved(update.catalog);
      this.options.metrics.catalogApplied(update.version, 'ack');
      for (const listener of this.appliedListeners) {
        try {
          listener(update.catalog, update.version);
        } catch (error) {
          this.log.error({ err: error }, 'catalog listener failed');
        }
      }
      this.log.info(
        {
          version: String(update.version),
          services: update.catalog.services.length,
          ms: Number((performance.now() - started).toFixed(2)),
        },
        'catalog applied',
      );
      return { ok: true as const };
    });
  }

  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    const next = this.chain.then(task, task);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private health(service: string, backend: Backend): BackendHealth {
    const key = healthKey(service, backend);
    const local = this.localHealth.get(key);
    if (local && local.state !== 'unknown') return local.state;
    return this.remoteHealth.get(key)?.state ?? local?.state ?? 'unknown';
  }

  private planContext(): PlanContext {
    return {
      node: this.options.node,
      zone: this.options.zone,
      health: (s, b) => this.health(s, b),
      ejected: (s, b) => this.ejectedNow.has(healthKey(s, b)),
      panicThreshold: this.options.panicThreshold,
    };
  }

  /** Every service programmed once a write with `replanned` has landed, in catalog order. */
  private programmedServices(
    catalog: Catalog,
    replanned: ReadonlyMap<string, readonly ProgrammedService[]>,
  ): ProgrammedService[] {
    const out: ProgrammedService[] = [];
    for (const service of catalog.services)
      for (const s of replanned.get(service.key) ?? this.programmed.get(service.key) ?? []) out.push(s);
    return out;
  }

  /**
   * Writes what changed: the services whose catalog entry, backends' health or ejection changed since the
   * last write are planned again and only the datapath services that differ are handed to the sink
   * (update). The first write, a reconcile, the first write after a failure, and any write to a sink
   * without update() plan everything and apply it whole.
   */
  private async write(kind: 'snapshot' | 'health' | 'reconcile'): Promise<void> {
    const catalog = this.catalog;
    if (!catalog) return;
    this.dirty = false;
    const started = performance.now();
    const touched = this.touched;
    this.touched = new Set();
    const full = this.needFull || kind === 'reconcile' || !this.options.sink.update;
    const context = this.planContext();
    try {
      const dirty = full
        ? { replan: catalog.services, removed: [...this.programmed.keys()] }
        : dirtyServices({ previous: this.programmedCatalog, next: catalog, touched });
      const replanned = new Map<string, readonly ProgrammedService[]>();
      const choices = new Map<string, LocalityChoice>();
      for (const service of dirty.replan) {
        const planned = planService(service, context);
        replanned.set(service.key, planned.services);
        choices.set(service.key, planned.choice);
      }
      const removed = dirty.removed.filter((key) => !replanned.has(key));
      if (full) {
        const services: ProgrammedService[] = [];
        for (const service of catalog.services)
          for (const s of replanned.get(service.key) ?? []) services.push(s);
        this.needFull = true;
        await this.options.sink.apply(services);
      } else {
        const change = datapathChange(this.programmed, replanned, removed);
        if (change.upsert.length > 0 || change.remove.length > 0) {
          this.needFull = true;
          await this.options.sink.update?.({
            ...change,
            // Called during the write, before commit() records it: the replanned entries win.
            services: () => this.programmedServices(catalog, replanned),
          });
        }
      }
      this.needFull = false;
      this.commit(replanned, removed, full);
      this.programmedCatalog = catalog;
      this.lastWritten = full ? undefined : new Set([...replanned.keys(), ...removed]);
      this.options.metrics.observeSync(kind, (performance.now() - started) / 1000);
      this.logChoices(choices, removed);
    } catch (error) {
      for (const service of touched) this.touched.add(service);
      throw error;
    }
  }

  /** Records what a write programmed: the per-service entries, the kernel index and the metric labels. */
  private commit(
    replanned: ReadonlyMap<string, readonly ProgrammedService[]>,
    removed: readonly string[],
    full: boolean,
  ): void {
    if (full) {
      this.programmed = new Map();
      this.kernelIndex = new Map();
      this.programmedLabels = new Map();
    }
    for (const key of removed) this.forgetProgrammed(key);
    for (const [key, entries] of replanned) {
      this.forgetProgrammed(key);
      this.programmed.set(key, entries);
      for (const s of entries) {
        for (const b of s.backends) {
          this.kernelIndex.set(kernelKey(s.vip, s.port, s.protocol, b.address, b.port), {
            service: s.service,
            label: backendLabel(b.address, b.port),
            key: b.id,
          });
        }
      }
    }
    const catalog = this.catalog;
    for (const service of catalog?.services ?? []) {
      if (!replanned.has(service.key)) continue;
      const set = new Set<string>();
      for (const backend of service.backends) {
        for (const port of service.ports)
          set.add(backendLabel(backend.address, backendPort(backend, port.targetPort)));
      }
      this.programmedLabels.set(service.key, set);
    }
  }

  private forgetProgrammed(service: string): void {
    for (const s of this.programmed.get(service) ?? []) {
      for (const b of s.backends)
        this.kernelIndex.delete(kernelKey(s.vip, s.port, s.protocol, b.address, b.port));
    }
    this.programmed.delete(service);
    this.programmedLabels.delete(service);
  }

  private logChoices(choices: ReadonlyMap<string, LocalityChoice>, removed: readonly string[]): void {
    for (const service of removed) this.lastChoices.delete(service);
    for (const [service, choice] of choices) {
      const summary = `${choice.tier}${choice.panic ? ' (panic)' : ''}`;
      if (this.lastChoices.get(service) !== summary) {
        if (this.lastChoices.has(service) || choice.panic || choice.tier !== 'all') {
          const level = choice.panic ? 'warn' : 'info';
          this.log[level](
            { service, tier: choice.tier, panic: choice.panic, trail: choice.trail },
            'locality tier',
          );
        }
        this.lastChoices.set(service, summary);
      }
    }
  }

  /** Drops metrics and state of services and backends that left the catalog. */
  private forgetRemoved(catalog: Catalog): void {
    // Only services the last write planned again or removed can have lost backends (all after a full one).
    const scope = this.lastWritten;
    const inScope = (service: string) => scope === undefined || scope.has(service);
    const keys = new Set(catalog.services.map((s) => s.key));
    for (const [service, set] of this.metricLabels) {
      if (!inScope(service)) continue;
      if (!keys.has(service)) {
        this.options.metrics.removeService(service);
        this.metricLabels.delete(service);
        continue;
      }
      const current = this.programmedLabels.get(service) ?? new Set();
      for (const label of set) {
        if (!current.has(label)) {
          this.options.metrics.removeBackend(service, label);
          set.delete(label);
        }
      }
    }
    const healthKeys = new Set(
      catalog.services.flatMap((s) => (inScope(s.key) ? s.backends.map((b) => healthKey(s.key, b)) : [])),
    );
    const gone = (key: string) => inScope(serviceOfHealthKey(key)) && !healthKeys.has(key);
    for (const key of [...this.localHealth.keys()]) if (gone(key)) this.localHealth.delete(key);
    for (const key of [...this.ejectedNow]) if (gone(key)) this.ejectedNow.delete(key);
  }

  private readonly metricLabels = new Map<string, Set<string>>();

  private trackMetric(service: string, label: string): void {
    const set = this.metricLabels.get(service) ?? new Set<string>();
    this.metricLabels.set(service, set);
    set.add(label);
  }

  private findBackend(service: string, key: string): Backend | undefined {
    return this.catalog?.services
      .find((s) => s.key === service)
      ?.backends.find((b) => healthKey(service, b) === key);
  }

  private onTransition(t: HealthTransition): void {
    const state = t.to as BackendHealth;
    this.localHealth.set(t.target.key, { state, reason: t.reason });
    this.touched.add(t.target.service);
    const label = backendLabel(t.target.address, t.target.port);
    this.trackMetric(t.target.service, label);
    this.options.metrics.setBackendHealth(t.target.service, label, state, t.reason);
    // The scheduler logs the transition itself; here it is applied and reported.
    const backend = this.findBackend(t.target.service, t.target.key);
    this.reporter?.reportHealth([
      {
        service: t.target.service,
        address: t.target.address,
        port: backend?.port ?? 0,
        state,
        reason: t.reason,
      },
    ]);
    this.schedule();
  }

  private onProbeResult(r: ProbeResult): void {
    this.options.metrics.observeProbe(
      r.target.service,
      backendLabel(r.target.address, r.target.port),
      r.target.check.protocol,
      r.durationMs / 1000,
      r.outcome.ok,
    );
  }

  /** Queues one write for everything that changed since the last one. */
  private schedule(): void {
    if (this.dirty) return;
    this.dirty = true;
    void this.enqueue(async () => {
      if (!this.dirty) return;
      try {
        await this.write('health');
      } catch (error) {
        this.log.error({ err: error }, 'datapath write after a health change failed');
      }
    });
  }

  /** Reads the kernel's per-backend state: counters into metrics, and ejections logged and applied. */
  pollKernel(): void {
    let statuses: readonly KernelBackendStatus[];
    try {
      statuses = this.options.sink.readStatus();
    } catch (error) {
      this.log.warn({ err: error }, 'reading the datapath state failed');
      return;
    }
    const ejectedByKey = new Map<string, boolean>();
    for (const st of statuses) {
      const id = this.kernelIndex.get(kernelKey(st.vip, st.port, st.protocol, st.address, st.backendPort));
      if (!id) continue;
      this.trackMetric(id.service, id.label);
      this.options.metrics.observeBackendCounters(id.service, id.label, {
        connects: st.connects,
        connectFailures: st.connectFailures,
        activeConnections: st.activeConnections,
        ejections: st.ejections,
      });
      const memKey = kernelKey(st.vip, st.port, st.protocol, st.address, st.backendPort);
      const memory = this.kernelMemory.get(memKey);
      if (memory ? st.ejections > memory.ejections : st.ejected) {
        const reason = `${st.consecutiveFailures > 0 ? st.consecutiveFailures : 'threshold'} consecutive failed connects (ejection ${st.consecutiveEjections} in a row)`;
        this.log.warn(
          {
            service: id.service,
            backend: id.label,
            vip: `${st.vip}:${st.port}`,
            ejectedForMs: st.ejectedForMs,
            ejections: st.ejections,
            reason,
          },
          'kernel ejected backend',
        );
        this.reporter?.reportEjection?.(id.service, st, reason);
      } else if (memory?.ejected && !st.ejected) {
        this.log.info({ service: id.service, backend: id.label }, 'kernel ejection ended');
        this.reporter?.reportEjection?.(id.service, st, null);
      }
      this.kernelMemory.set(memKey, { ejections: st.ejections, ejected: st.ejected });
      ejectedByKey.set(id.key, (ejectedByKey.get(id.key) ?? false) || st.ejected);
    }
    let changed = false;
    for (const [key, ejected] of ejectedByKey) {
      if (ejected !== this.ejectedNow.has(key)) {
        changed = true;
        if (ejected) this.ejectedNow.add(key);
        else this.ejectedNow.delete(key);
        this.touched.add(serviceOfHealthKey(key));
      }
    }
    if (changed) this.schedule();
    try {
      for (const m of this.options.sink.mapUsage?.() ?? [])
        this.options.metrics.setMapUsage(m.name, m.entries, m.capacity);
    } catch (error) {
      this.log.debug({ err: error }, 'reading map usage failed');
    }
  }
}
