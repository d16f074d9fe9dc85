import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { formatCatalogError } from './catalog/parse';
import type { Catalog, CatalogError } from './catalog/types';
import { type Clock, systemClock } from './clock';
import { HealthAggregator } from './health';
import { ControllerMetrics } from './metrics';
import { type OutlierEjectionStatus, OutlierTracker, validateOutlier } from './outliers';
import {
  type AgentMessage,
  controllerServiceDefinition,
  LOADER_OPTIONS,
  PROTO_PATH,
  SERVICE_NAME,
  type WireBackendRef,
} from './protocol';
import { AgentSession, isMalformed, type SessionHost, type SyncCall } from './session';
import type { CatalogSource, CatalogSourceStatus } from './source';
import { CatalogStore, type StoreChange } from './store';

export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
  /** CA that signs agents' client certificates (they must present one). */
  readonly ca: string;
}

export interface ControllerServerOptions {
  readonly source: CatalogSource;
  readonly logger: Logger;
  readonly registry: Registry;
  readonly clock?: Clock;
  /** How long a departed probe owner's last report stays valid (default 30 s). */
  readonly healthGraceMs?: number;
  /** A pending delta naming more services than this becomes a full snapshot (default 4096). */
  readonly maxQueueServices?: number;
  /** Versions an agent may have unacknowledged before its changes are coalesced (default 8). */
  readonly maxInFlight?: number;
  /** mTLS; null means plaintext, allowed only on loopback unless `insecure`. */
  readonly tls?: TlsFiles | null;
  readonly insecure?: boolean;
  readonly epoch?: string;
}

export interface AgentStatus {
  readonly node: string;
  readonly zone: string;
  readonly connectedAt: string;
  readonly ackedVersion: number;
  readonly sentVersion: number;
  readonly lag: number;
  readonly pending: 'none' | 'delta' | 'snapshot';
  readonly lastNack: { readonly version: number; readonly reason: string } | null;
}

export interface ControllerStatus {
  readonly epoch: string;
  readonly version: number;
  readonly services: number;
  readonly configValid: boolean;
  readonly configErrors: readonly string[];
  readonly source: CatalogSourceStatus;
  readonly agents: readonly AgentStatus[];
  /** Passive ejections each node's kernel currently applies (a per-node view; health is not changed). */
  readonly outlierEjections: readonly OutlierEjectionStatus[];
}

const NODE_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** True when plaintext is acceptable without --insecure: loopback addresses and localhost. */
export function isLoopbackListen(address: string): boolean {
  const host = splitHostPort(address).host;
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1';
  return false;
}

/** Splits `host:port` / `[v6]:port`. Throws with a clear message when malformed. */
export function splitHostPort(address: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new Error(`listen address '${address}' must be host:port or [ipv6]:port`);
  return { host: (match[1] ?? match[2])!, port };
}

/**
 * The controller: serves the catalog from a CatalogSource to agents over gRPC (sluice.v1.Controller/Sync),
 * merges their health reports, and serves grpc.health.v1 and server reflection on the same port.
 */
export class ControllerServer {
  readonly store: CatalogStore;
  readonly health: HealthAggregator;
  readonly metrics: ControllerMetrics;
  readonly outliers: OutlierTracker;
  private readonly sessions = new Map<string, AgentSession>();
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly grpcHealth = new HealthImplementation({
    '': 'NOT_SERVING',
    [SERVICE_NAME]: 'NOT_SERVING',
  });
  private server: grpc.Server | null = null;
  private configErrors: readonly CatalogError[] = [];
  private readonly host: SessionHost;

  constructor(private readonly options: ControllerServerOptions) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger.child({ component: 'controller' });
    this.metrics = new ControllerMetrics(options.registry);
    this.health = new HealthAggregator({
      clock: this.clock,
      graceMs: options.healthGraceMs ?? 30_000,
      onChange: (keys) => this.fanOut(this.store.refreshHealth(keys)),
      onAssignment: (node, backends) => this.sessions.get(node)?.sendProbes(backends),
    });
    this.outliers = new OutlierTracker({
      gauge: this.metrics.outlierEjections,
      reports: this.metrics.outlierReports,
      logger: this.logger,
    });
    this.store = new CatalogStore({
      clock: this.clock,
      health: (key, backend) => this.health.health(key, backend),
      ...(options.epoch ? { epoch: options.epoch } : {}),
    });
    this.host = this.sessionHost();
  }

  /** Loads the first catalog (rejects when it is invalid), then listens. Resolves with the bound port. */
  async start(listen: string): Promise<number> {
    const { tls, insecure } = this.options;
    if (!tls && !insecure && !isLoopbackListen(listen)) {
      throw new Error(
        `refusing plaintext gRPC on non-loopback address ${listen}: give --tls-cert, --tls-key and --tls-ca, or --insecure`,
      );
    }
    await this.options.source.start({
      onCatalog: (catalog) => this.applyCatalog(catalog),
      onInvalid: (errors) => this.invalidCatalog(errors),
    });
    if (this.store.catalog === null) {
      await this.options.source.stop();
      const errors = this.configErrors.map(formatCatalogError);
      throw new CatalogInvalidError(`${this.options.source.description} is invalid`, errors);
    }

    const server = new grpc.Server({
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    });
    server.addService(controllerServiceDefinition(), {
      Sync: (call: SyncCall) => this.handleSync(call),
    });
    this.grpcHealth.addToServer(server);
    const reflected = protoLoader.loadSync([PROTO_PATH, healthProtoPath], LOADER_OPTIONS);
    new ReflectionService(reflected).addToServer(server);

    const credentials = tls
      ? grpc.ServerCredentials.createSsl(
          readFileSync(tls.ca),
          [{ cert_chain: readFileSync(tls.cert), private_key: readFileSync(tls.key) }],
          true,
        )
      : grpc.ServerCredentials.createInsecure();
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(listen, credentials, (err, bound) => (err ? reject(err) : resolve(bound))),
    );
    this.server = server;
    this.grpcHealth.setStatus('', 'SERVING');
    this.grpcHealth.setStatus(SERVICE_NAME, 'SERVING');
    this.logger.info(
      { listen, port, tls: Boolean(tls), version: this.store.version },
      'controller listening',
    );
    return port;
  }

  async stop(): Promise<void> {
    await this.options.source.stop();
    this.health.close();
    for (const session of this.sessions.values()) session.close();
    const server = this.server;
    this.server = null;
    if (!server) return;
    this.grpcHealth.setStatus('', 'NOT_SERVING');
    this.grpcHealth.setStatus(SERVICE_NAME, 'NOT_SERVING');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => server.forceShutdown(), 2000);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  status(): ControllerStatus {
    return {
      epoch: this.store.epoch,
      version: this.store.version,
      services: this.store.size,
      configValid: this.configErrors.length === 0,
      configErrors: this.configErrors.map(formatCatalogError),
      source: this.options.source.status(),
      agents: [...this.sessions.values()].map((s) => ({
        node: s.node,
        zone: s.zone,
        connectedAt: new Date(s.connectedAt).toISOString(),
        ackedVersion: s.ackedVersion,
        sentVersion: s.sentVersion,
        lag: s.lag,
        pending: s.queue.pending?.kind ?? 'none',
        lastNack: s.lastNack,
      })),
      outlierEjections: this.outliers.list(),
    };
  }

  /** The session of a connected node, if any (for tests and status). */
  session(node: string): AgentSession | undefined {
    return this.sessions.get(node);
  }

  private applyCatalog(catalog: Catalog): void {
    this.configErrors = [];
    this.metrics.configInvalid.set(0);
    this.metrics.configErrors.set(0);
    this.metrics.configLoads.inc({ result: 'ok' });
    const started = this.clock.now();
    this.health.setCatalog(catalog);
    this.outliers.setCatalog(catalog);
    const change = this.store.setCatalog(catalog);
    this.metrics.catalogServices.set(catalog.services.length);
    this.metrics.catalogBackends.set(catalog.services.reduce((n, s) => n + s.backends.length, 0));
    const applied = this.clock.now();
    this.fanOut(change);
    if (change) {
      this.logger.info(
        {
          version: change.version,
          upserts: change.delta.upserts.length,
          deletes: change.delta.deletes.length,
          agents: this.sessions.size,
          applyMs: Math.round((applied - started) * 10) / 10,
          fanOutMs: Math.round((this.clock.now() - applied) * 10) / 10,
        },
        'catalog changed',
      );
    }
  }

  private invalidCatalog(errors: readonly CatalogError[]): void {
    this.configErrors = errors;
    this.metrics.configInvalid.set(1);
    this.metrics.configErrors.set(errors.length);
    this.metrics.configLoads.inc({ result: 'invalid' });
  }

  private fanOut(change: StoreChange | null): void {
    if (!change) return;
    this.metrics.catalogVersion.set(change.version);
    for (const session of this.sessions.values()) {
      session.push(change);
      this.metrics.agentVersionLag.set({ node: session.node }, session.lag);
    }
  }

  private handleSync(call: SyncCall): void {
    let session: AgentSession | null = null;
    let ended = false;
    const fail = (code: grpc.status, details: string, reason: string) => {
      if (ended) return;
      this.logger.warn(
        { node: session?.node, peer: call.getPeer(), code: grpc.status[code], details },
        'ending agent stream',
      );
      cleanup(reason);
      call.emit('error', { code, details });
    };
    const cleanup = (reason: string) => {
      if (ended) return;
      ended = true;
      this.metrics.streamsEnded.inc({ reason });
      if (!session) return;
      session.close();
      if (this.sessions.get(session.node) === session) {
        this.sessions.delete(session.node);
        this.metrics.agentVersionLag.remove({ node: session.node });
        this.metrics.connectedAgents.set(this.sessions.size);
        this.health.agentDisconnected(session.node);
        this.outliers.agentDisconnected(session.node);
        this.logger.info({ node: session.node, reason }, 'agent disconnected');
      }
    };
    call.on('data', (message: unknown) => {
      if (ended) return;
      if (isMalformed(message)) return fail(grpc.status.INVALID_ARGUMENT, message.malformed, 'malformed');
      const m = message as AgentMessage;
      if (session === null) {
        if (!('hello' in m) || m.kind !== 'hello') {
          return fail(
            grpc.status.INVALID_ARGUMENT,
            `the first message must be hello, got ${m.kind}`,
            'protocol',
          );
        }
        const hello = m.hello;
        if (!NODE_NAME.test(hello.node)) {
          return fail(
            grpc.status.INVALID_ARGUMENT,
            `hello.node '${hello.node}' must be a node name (lowercase letters, digits, '-' and '.')`,
            'protocol',
          );
        }
        const previous = this.sessions.get(hello.node);
        if (previous) {
          this.logger.warn({ node: hello.node }, 'node reconnected: replacing its older stream');
          previous.close();
          this.sessions.delete(hello.node);
          previous.call.emit('error', {
            code: grpc.status.ABORTED,
            details: 'replaced by a newer stream from the same node',
          });
        }
        session = new AgentSession(hello.node, hello.zone, call, this.host);
        this.sessions.set(hello.node, session);
        this.metrics.connectedAgents.set(this.sessions.size);
        const kind = session.start(hello);
        this.metrics.agentVersionLag.set({ node: session.node }, session.lag);
        this.logger.info(
          { node: hello.node, zone: hello.zone, has: hello.version, sent: kind, version: this.store.version },
          'agent connected',
        );
        this.health.agentConnected(hello.node);
        return;
      }
      let problem: string | null = null;
      switch (m.kind) {
        case 'hello':
          problem = 'hello may only be sent once per stream';
          break;
        case 'ack':
          problem = session.ack(m.ack.version);
          break;
        case 'nack':
          problem = session.nack(m.nack.version, m.nack.reason);
          break;
        case 'health': {
          const outliers = m.health.outliers ?? [];
          for (let i = 0; i < outliers.length && problem === null; i++)
            problem = validateOutlier(outliers[i]!, i);
          if (problem !== null) break;
          if (outliers.length > 0) this.outliers.report(session.node, outliers);
          const outcome = this.health.report(session.node, m.health.results);
          this.metrics.healthReports.inc({ result: 'accepted' }, outcome.accepted);
          this.metrics.healthReports.inc({ result: 'ignored' }, outcome.ignored);
          if (outcome.changed.size > 0) this.fanOut(this.store.refreshHealth(outcome.changed));
          break;
        }
      }
      if (problem !== null) fail(grpc.status.INVALID_ARGUMENT, problem, 'protocol');
    });
    call.on('end', () => {
      cleanup('closed');
      call.end();
    });
    call.on('cancelled', () => cleanup('cancelled'));
    call.on('error', () => cleanup('error'));
    call.on('close', () => cleanup('closed'));
  }

  private sessionHost(): SessionHost {
    const metrics = this.metrics;
    return {
      store: this.store,
      logger: this.logger,
      maxQueueServices: this.options.maxQueueServices ?? 4096,
      maxInFlight: this.options.maxInFlight ?? 8,
      now: () => this.clock.now(),
      onSent: (_s, kind) => (kind === 'snapshot' ? metrics.snapshotsSent.inc() : metrics.deltasSent.inc()),
      onCoalesced: (_s, overflowed) =>
        overflowed ? metrics.queueOverflows.inc() : metrics.deltasCoalesced.inc(),
      onAck: (session, version) => {
        metrics.acks.inc();
        const created = this.store.versionTime(version);
        if (created !== undefined) metrics.pushAckSeconds.observe((this.clock.now() - created) / 1000);
        metrics.agentVersionLag.set({ node: session.node }, session.lag);
      },
      onNack: (session, version, reason) => {
        metrics.nacks.inc({ node: session.node });
        this.logger.warn({ node: session.node, version, reason }, 'agent rejected a catalog version');
      },
    };
  }
}

/** The first catalog could not be loaded: the controller does not start. */
export class CatalogInvalidError extends Error {
  override readonly name = 'CatalogInvalidError';
  constructor(
    message: string,
    readonly errors: readonly string[],
  ) {
    super(`${message}:\n  ${errors.join('\n  ')}`);
  }
}

export type { WireBackendRef };
