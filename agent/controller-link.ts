/**
 * Controller mode: follows the controller's Sync stream through the agent-side client
 * (controller/agent-client.ts). Each snapshot or delta becomes a whole catalog (with the controller's
 * merged health) applied through the NodeAgent, answered with ACK or NACK; a NACKed update changes
 * nothing here, so the next delta is computed against the last good state. Health transitions go back to
 * the controller; the controller's probe assignment decides which backends this agent probes.
 *
 * While the controller is unreachable nothing is torn down: the data plane keeps the last applied
 * catalog, local probes keep running and their transitions keep being applied; the client reconnects
 * with exponential back-off and jitter and says what it has, so the controller resyncs only the
 * difference (or sends a full snapshot after its own restart).
 *
 * Restart while the controller is down: every ACKed version (and the probe assignment) is persisted in
 * the state directory (catalog-state.ts). A starting agent that has a persisted catalog says so in its
 * Hello; if the controller cannot be reached (the first attempt fails, or nothing arrives within
 * `restoreAfterMs`) before any update from the controller, the persisted catalog is applied locally, so
 * probes and local health run again. The controller's first answer replaces it like any other update.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import {
  AgentClient,
  type OutlierEjection,
  type CatalogUpdate as WireUpdate,
} from '../controller/agent-client';
import type { Catalog } from '../controller/catalog';
import type { SyncedService } from '../controller/protocol';
import { appliedStateOf, type PersistedCatalog, StateWriter } from './catalog-state';
import type { HostPort } from './config';
import type { AgentMetrics } from './metrics';
import { healthKey, type KernelBackendStatus, type NodeAgent, type RemoteHealth } from './node-agent';

/** The catalog after applying a wire update to the services we have. Pure. */
export function nextServices(
  current: ReadonlyMap<string, SyncedService>,
  update: Pick<WireUpdate, 'kind' | 'upserts' | 'deletes'>,
): Map<string, SyncedService> {
  const next = new Map(update.kind === 'snapshot' ? [] : current);
  for (const key of update.deletes) next.delete(key);
  for (const service of update.upserts) next.set(service.key, service);
  return next;
}

/** The controller's merged health of every backend, keyed like the agent's own. Pure. */
export function remoteHealthOf(services: Iterable<SyncedService>): RemoteHealth {
  const health = new Map<string, { state: 'healthy' | 'unhealthy' | 'unknown'; reason: string }>();
  for (const service of services) {
    for (const backend of service.backends) {
      health.set(healthKey(service.key, backend), { state: backend.health, reason: backend.healthReason });
    }
  }
  return health;
}

/**
 * The reports for a kernel ejection the agent observed (`reason` set: it started; null: it ended). An
 * ejection that started and already ended between two reads of the maps is reported as both, so the
 * controller hears of it without keeping it as current. Pure.
 */
export function outlierReports(
  service: string,
  st: KernelBackendStatus,
  reason: string | null,
): OutlierEjection[] {
  const report = (ejected: boolean): OutlierEjection => ({
    service,
    address: st.address,
    port: st.backendPort,
    vip: st.vip,
    vipPort: st.port,
    protocol: st.protocol,
    ejected,
    ejectedForMs: ejected ? st.ejectedForMs : 0,
    consecutiveFailures: st.consecutiveFailures,
    consecutiveEjections: st.consecutiveEjections,
    ejections: st.ejections,
    reason: ejected ? (reason ?? '') : '',
  });
  if (reason === null) return [report(false)];
  return st.ejected ? [report(true)] : [report(true), report(false)];
}

export interface ControllerLinkOptions {
  readonly controller: HostPort;
  readonly node: string;
  readonly zone?: string | undefined;
  readonly agent: NodeAgent;
  readonly metrics: AgentMetrics;
  readonly log: Logger;
  /** For the agent client, which names itself (component: agent-client); default `log`. */
  readonly clientLog?: Logger;
  /** Reconnect back-off (tests shorten it). */
  readonly backoff?: { initialMs?: number; maxMs?: number };
  /** mTLS credentials; default plaintext (the config allows that only on loopback or with --insecure). */
  readonly credentials?: grpc.ChannelCredentials;
  /** Where each ACKed catalog is persisted; undefined: not persisted. */
  readonly stateDir?: string;
  /** A catalog persisted by an earlier run (already validated), used while the controller is unreachable. */
  readonly persisted?: PersistedCatalog;
  /** How long to wait for the controller before applying `persisted` (default 3 s). */
  readonly restoreAfterMs?: number;
}

export function connectController(options: ControllerLinkOptions): {
  client: AgentClient;
  stop: () => Promise<void>;
} {
  const { agent, metrics, log } = options;
  const target = options.controller.host.includes(':')
    ? `[${options.controller.host}]:${options.controller.port}`
    : `${options.controller.host}:${options.controller.port}`;
  const persisted = options.persisted;
  let services = new Map<string, SyncedService>(persisted?.services.map((s) => [s.key, s]) ?? []);
  let assignment: readonly string[] | undefined = persisted?.probes;
  /**
   * Set once the controller delivered an update, or the persisted catalog was applied: from then on the
   * persisted catalog is never applied (again).
   */
  let decided = false;
  let stopped = false;
  const writer = options.stateDir
    ? new StateWriter(
        options.stateDir,
        (error) => log.error({ err: error, dir: options.stateDir }, 'could not persist the catalog'),
        (state) => log.debug({ version: state.version, dir: options.stateDir }, 'catalog persisted'),
      )
    : undefined;
  const persist = () => {
    const applied = client.applied;
    if (!writer || applied.version === 0) return;
    void writer.save({
      epoch: applied.epoch,
      version: applied.version,
      domain: applied.domain,
      services: [...services.values()],
      probes: assignment,
    });
  };
  const useAssignment = (keys: readonly string[]) => {
    const set = new Set(keys);
    agent.setOwnership((service, backend) => set.has(`${service}|${backend.address}|${backend.port ?? 0}`));
  };

  let restoreTimer: NodeJS.Timeout | undefined;
  const restore = (why: string) => {
    if (restoreTimer) clearTimeout(restoreTimer);
    restoreTimer = undefined;
    if (!persisted || decided || stopped) return;
    // Once only: a later disconnect keeps whatever is applied by then.
    decided = true;
    if (persisted.probes) useAssignment(persisted.probes);
    log.warn(
      { version: persisted.version, services: persisted.services.length, why },
      'controller unreachable: applying the persisted catalog',
    );
    const catalog: Catalog = { domain: persisted.domain, services: [...persisted.services] };
    agent
      .applyCatalog({
        version: BigInt(persisted.version),
        catalog,
        health: remoteHealthOf(persisted.services),
      })
      .then(
        (result) => {
          if (result.ok) log.info({ version: persisted.version }, 'persisted catalog applied');
          else log.error({ reason: result.reason }, 'persisted catalog rejected by the datapath');
        },
        (error: Error) => log.error({ err: error }, 'persisted catalog rejected by the datapath'),
      );
  };

  const client: AgentClient = new AgentClient({
    target,
    node: options.node,
    ...(options.zone !== undefined ? { zone: options.zone } : {}),
    logger: options.clientLog ?? log,
    ...(options.backoff ? { backoff: options.backoff } : {}),
    ...(options.credentials ? { credentials: options.credentials } : {}),
    ...(persisted ? { initial: appliedStateOf(persisted) } : {}),
    onUpdate(update) {
      decided = true;
      if (restoreTimer) clearTimeout(restoreTimer);
      const next = nextServices(services, update);
      const catalog: Catalog = { domain: update.domain, services: [...next.values()] };
      agent
        .applyCatalog({ version: BigInt(update.version), catalog, health: remoteHealthOf(next.values()) })
        .then((result) => {
          if (result.ok) {
            services = next;
            client.ack(update.version);
            persist();
          } else {
            client.nack(update.version, result.reason);
          }
        })
        .catch((error: Error) => client.nack(update.version, error.message));
    },
    onProbes(backends) {
      assignment = backends.map((b) => `${b.service}|${b.address}|${b.port ?? 0}`);
      useAssignment(assignment);
      log.info({ backends: backends.length }, 'probe assignment');
      persist();
    },
    onState(state, detail) {
      metrics.setControllerState(state === 'stopped' ? 'disconnected' : state);
      const level = state === 'disconnected' ? 'warn' : 'info';
      log[level]({ controller: target, state, detail }, `controller ${state}`);
      if (state === 'disconnected') restore(detail);
    },
  });
  agent.setReporter({
    reportHealth(results) {
      client.reportHealth(
        results.map((r) => ({
          service: r.service,
          address: r.address,
          port: r.port === 0 ? null : r.port,
          state: r.state,
          reason: r.reason,
        })),
      );
    },
    reportEjection(service, status, reason) {
      client.reportOutliers(outlierReports(service, status, reason));
    },
  });
  client.start();
  if (persisted && !decided) {
    restoreTimer = setTimeout(
      () => restore(`no answer within ${options.restoreAfterMs ?? 3000} ms`),
      options.restoreAfterMs ?? 3000,
    );
    restoreTimer.unref();
  }
  return {
    client,
    async stop() {
      stopped = true;
      if (restoreTimer) clearTimeout(restoreTimer);
      agent.setReporter(undefined);
      client.stop();
      await writer?.flush();
    },
  };
}
