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
 */
import type { Logger } from 'pino';
import { AgentClient, type CatalogUpdate as WireUpdate } from '../controller/agent-client';
import type { Catalog } from '../controller/catalog';
import type { SyncedService } from '../controller/protocol';
import type { HostPort } from './config';
import type { AgentMetrics } from './metrics';
import { healthKey, type NodeAgent, type RemoteHealth } from './node-agent';

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
}

export function connectController(options: ControllerLinkOptions): {
  client: AgentClient;
  stop: () => Promise<void>;
} {
  const { agent, metrics, log } = options;
  const target = options.controller.host.includes(':')
    ? `[${options.controller.host}]:${options.controller.port}`
    : `${options.controller.host}:${options.controller.port}`;
  let services = new Map<string, SyncedService>();
  let owned: Set<string> | undefined;

  const client: AgentClient = new AgentClient({
    target,
    node: options.node,
    ...(options.zone !== undefined ? { zone: options.zone } : {}),
    logger: options.clientLog ?? log,
    ...(options.backoff ? { backoff: options.backoff } : {}),
    onUpdate(update) {
      const next = nextServices(services, update);
      const catalog: Catalog = { domain: update.domain, services: [...next.values()] };
      agent
        .applyCatalog({ version: BigInt(update.version), catalog, health: remoteHealthOf(next.values()) })
        .then((result) => {
          if (result.ok) {
            services = next;
            client.ack(update.version);
          } else {
            client.nack(update.version, result.reason);
          }
        })
        .catch((error: Error) => client.nack(update.version, error.message));
    },
    onProbes(backends) {
      owned = new Set(backends.map((b) => `${b.service}|${b.address}|${b.port ?? 0}`));
      const set = owned;
      agent.setOwnership((service, backend) => set.has(`${service}|${backend.address}|${backend.port ?? 0}`));
      log.info({ backends: backends.length }, 'probe assignment');
    },
    onState(state, detail) {
      metrics.setControllerState(state === 'stopped' ? 'disconnected' : state);
      const level = state === 'disconnected' ? 'warn' : 'info';
      log[level]({ controller: target, state, detail }, `controller ${state}`);
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
  });
  client.start();
  return {
    client,
    async stop() {
      agent.setReporter(undefined);
      client.stop();
    },
  };
}
