import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import pino, { type Logger } from 'pino';
import { type Clock, systemClock } from './clock';
import {
  type AgentMessage,
  type ControllerMessage,
  fromWireService,
  type HealthState,
  loadPackageDefinition,
  ProtocolError,
  SERVICE_NAME,
  type SyncedService,
  toWireHealth,
  type WireBackendRef,
  type WireDelta,
  type WireOutlierEjection,
  type WireSnapshot,
} from './protocol';

/**
 * The agent side of the Sync protocol, reusable by the node agent and the benchmark.
 *
 * Contract: updates (a snapshot, then deltas) are handed to `onUpdate` one at a time, in order; the next one
 * is held back until the caller calls ack(version) or nack(version, reason) for the current one. The client
 * tracks what was ACKed (epoch, version, each service's revision) and says so in its Hello on every
 * reconnect, so the controller sends only the difference. Deltas that do not apply to the ACKed state
 * (after a NACK) are dropped: the controller resends from the last ACKed version with its next change.
 * Reconnects use exponential back-off with jitter; timers and randomness are injected.
 */

export interface CatalogUpdate {
  readonly kind: 'snapshot' | 'delta';
  readonly epoch: string;
  readonly version: number;
  /** The version a delta applies to (0 for a snapshot). */
  readonly baseVersion: number;
  readonly domain: string;
  /** Snapshot: every service. Delta: new or changed services (whole). */
  readonly upserts: readonly SyncedService[];
  /** Keys of removed services (always empty in a snapshot). */
  readonly deletes: readonly string[];
}

/** What the agent has applied, as the controller knows it. */
export interface AppliedState {
  readonly epoch: string;
  readonly version: number;
  readonly domain: string;
  /** Service key -> revision. */
  readonly services: ReadonlyMap<string, string>;
}

export interface HealthResult {
  readonly service: string;
  readonly address: string;
  /** The backend's own port override, null when it has none (as in the catalog). */
  readonly port: number | null;
  readonly state: HealthState;
  readonly reason: string;
}

/**
 * A passive (outlier) ejection starting (`ejected`) or ending in this node's kernel, for one backend of
 * one service port. `ejectedForMs` is the time left when it was observed.
 */
export type OutlierEjection = Readonly<WireOutlierEjection>;

export interface BackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly multiplier: number;
  /** Fraction of the delay that is randomised away (0 = none, 1 = full jitter). */
  readonly jitter: number;
}

export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'stopped';

export interface AgentClientOptions {
  /** host:port of the controller. */
  readonly target: string;
  readonly node: string;
  readonly zone?: string;
  /** Default: insecure (loopback); see mtlsCredentials(). */
  readonly credentials?: grpc.ChannelCredentials;
  readonly channelOptions?: grpc.ChannelOptions;
  readonly clock?: Clock;
  readonly random?: () => number;
  readonly backoff?: Partial<BackoffOptions>;
  readonly logger?: Logger;
  /** State restored by the caller (e.g. persisted across an agent restart). */
  readonly initial?: AppliedState;
  readonly agentVersion?: string;
  readonly onUpdate: (update: CatalogUpdate) => void;
  readonly onProbes?: (
    backends: readonly { service: string; address: string; port: number | null }[],
  ) => void;
  readonly onState?: (state: ConnectionState, detail: string) => void;
}

export const DEFAULT_BACKOFF: BackoffOptions = Object.freeze({
  initialMs: 250,
  maxMs: 30_000,
  multiplier: 2,
  jitter: 0.5,
});

/** The delay before reconnect attempt `attempt` (0-based). Pure. */
export function backoffDelay(attempt: number, options: BackoffOptions, random: number): number {
  const base = Math.min(options.maxMs, options.initialMs * options.multiplier ** attempt);
  return Math.round(base * (1 - options.jitter * random));
}

/** Client credentials for mTLS from PEM files. */
export function mtlsCredentials(files: { ca: string; cert: string; key: string }): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(
    readFileSync(files.ca),
    readFileSync(files.key),
    readFileSync(files.cert),
  );
}

const EMPTY_STATE: AppliedState = Object.freeze({ epoch: '', version: 0, domain: '', services: new Map() });

type SyncStream = grpc.ClientDuplexStream<AgentMessage, ControllerMessage>;

export class AgentClient {
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly backoff: BackoffOptions;
  private readonly logger: Logger;
  private readonly client: grpc.Client;
  private readonly method: grpc.MethodDefinition<AgentMessage, ControllerMessage>;
  /** What is applied: epoch, version, domain; `revisions` is updated in place on every ACK. */
  private appliedHead: { epoch: string; version: number; domain: string };
  private readonly revisions: Map<string, string>;
  /** The immutable AppliedState handed out by `applied`, built when asked for (one copy per version). */
  private appliedView: AppliedState | null;
  private stream: SyncStream | null = null;
  private streamFresh = false;
  private inbox: CatalogUpdate[] = [];
  private current: CatalogUpdate | null = null;
  /** The stream `current` came on: its ACK/NACK goes only there (a new stream has its own Hello). */
  private currentStream: SyncStream | null = null;
  private attempt = 0;
  private reconnectTimer: unknown = null;
  private stopped = true;
  private state: ConnectionState = 'disconnected';
  private readonly health = new Map<string, HealthResult>();
  /** Ejections in force, with when they were observed (re-sent, with the time left, after a reconnect). */
  private readonly outliers = new Map<string, { ejection: OutlierEjection; at: number }>();
  /** Times a stream was opened (1 = first connect). */
  connects = 0;

  constructor(private readonly options: AgentClientOptions) {
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.logger = (options.logger ?? pino({ level: 'silent' })).child({ component: 'agent-client' });
    const initial = options.initial ?? EMPTY_STATE;
    this.appliedHead = { epoch: initial.epoch, version: initial.version, domain: initial.domain };
    this.revisions = new Map(initial.services);
    this.appliedView = initial;
    const service = loadPackageDefinition()[SERVICE_NAME] as protoLoader.ServiceDefinition;
    this.method = service.Sync as unknown as grpc.MethodDefinition<AgentMessage, ControllerMessage>;
    this.client = new grpc.Client(options.target, options.credentials ?? grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': -1,
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      ...options.channelOptions,
    });
  }

  get applied(): AppliedState {
    this.appliedView ??= { ...this.appliedHead, services: new Map(this.revisions) };
    return this.appliedView;
  }

  get connectionState(): ConnectionState {
    return this.state;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.reconnectTimer !== null) this.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const stream = this.stream;
    this.stream = null;
    stream?.cancel();
    this.client.close();
    this.setState('stopped', 'stopped');
  }

  /** Accepts the update currently delivered: it becomes the applied state and the controller is told. */
  ack(version: number): void {
    const update = this.take(version, 'ack');
    // In place: copying every service's revision per ACK would cost O(catalog) for a one-service delta.
    const services = this.revisions;
    if (update.kind === 'snapshot') services.clear();
    for (const key of update.deletes) services.delete(key);
    for (const s of update.upserts) services.set(s.key, s.revision);
    this.appliedHead = { epoch: update.epoch, version: update.version, domain: update.domain };
    this.appliedView = null;
    if (this.currentStream === this.stream) this.send({ ack: { version } });
    this.deliver();
  }

  /** Rejects the update currently delivered: the applied state stays as it was. */
  nack(version: number, reason: string): void {
    const stream = this.currentStream;
    this.take(version, 'nack');
    if (stream === this.stream) this.send({ nack: { version, reason } });
    this.deliver();
  }

  /** Reports probe results (state changes). The latest result per backend is re-sent after a reconnect. */
  reportHealth(results: readonly HealthResult[]): void {
    for (const r of results) this.health.set(`${r.service}|${r.address}|${r.port ?? 0}`, r);
    this.send({ health: { results: results.map(toWireResult) } });
  }

  /**
   * Reports passive ejections starting or ending. The controller records them per node (they never change
   * a backend's health); those still in force are re-sent after a reconnect.
   */
  reportOutliers(ejections: readonly OutlierEjection[]): void {
    if (ejections.length === 0) return;
    for (const e of ejections) {
      const key = `${e.service}|${e.vip}|${e.vipPort}|${e.protocol}|${e.address}|${e.port}`;
      if (e.ejected) this.outliers.set(key, { ejection: e, at: this.clock.now() });
      else this.outliers.delete(key);
    }
    this.send({ health: { results: [], outliers: ejections.map((e) => ({ ...e })) } });
  }

  private take(version: number, what: string): CatalogUpdate {
    const update = this.current;
    if (!update || update.version !== version) {
      throw new Error(`${what} ${version}: the update being applied is ${update ? update.version : 'none'}`);
    }
    this.current = null;
    return update;
  }

  /** Writes on the current stream (grpc-js buffers until it is established); a lost stream resends state. */
  private send(message: AgentMessage): void {
    this.stream?.write(message);
  }

  private setState(state: ConnectionState, detail: string): void {
    if (this.state === state) return;
    this.state = state;
    this.options.onState?.(state, detail);
  }

  private connect(): void {
    if (this.stopped) return;
    this.connects++;
    this.setState('connecting', this.options.target);
    const stream = this.client.makeBidiStreamRequest(
      this.method.path,
      this.method.requestSerialize,
      this.method.responseDeserialize,
    );
    this.stream = stream;
    this.streamFresh = true;
    const applied = this.appliedHead;
    stream.write({
      hello: {
        node: this.options.node,
        zone: this.options.zone ?? '',
        epoch: applied.epoch,
        version: applied.version,
        services: [...this.revisions].map(([key, revision]) => ({ key, revision })),
        agentVersion: this.options.agentVersion ?? '',
      },
    });
    // The controller may have restarted: tell it the health we know (it accepts only what we own).
    if (this.health.size > 0 || this.outliers.size > 0) {
      const now = this.clock.now();
      stream.write({
        health: {
          results: [...this.health.values()].map(toWireResult),
          outliers: [...this.outliers.values()].map(({ ejection, at }) => ({
            ...ejection,
            ejectedForMs: Math.max(0, Math.round(ejection.ejectedForMs - (now - at))),
          })),
        },
      });
    }
    let closed = false;
    const onClosed = (detail: string) => {
      if (closed || this.stream !== stream) return;
      closed = true;
      this.stream = null;
      this.inbox = [];
      this.setState('disconnected', detail);
      this.scheduleReconnect();
    };
    stream.on('data', (message: ControllerMessage) => {
      if (this.stream !== stream) return;
      if (this.state !== 'connected') {
        this.attempt = 0;
        this.setState('connected', this.options.target);
      }
      this.receive(message);
    });
    stream.on('error', (err: grpc.ServiceError) =>
      onClosed(`${grpc.status[err.code] ?? err.code}: ${err.details}`),
    );
    stream.on('end', () => onClosed('stream ended by the controller'));
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer !== null) return;
    const delay = backoffDelay(this.attempt++, this.backoff, this.random());
    this.logger.info({ delay, attempt: this.attempt }, 'reconnecting to the controller');
    this.reconnectTimer = this.clock.setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  private receive(message: ControllerMessage): void {
    if ('probes' in message && message.probes) {
      this.options.onProbes?.(
        message.probes.backends.map((b: WireBackendRef) => ({
          service: b.service,
          address: b.address,
          port: b.port === 0 ? null : b.port,
        })),
      );
      return;
    }
    const fresh = this.streamFresh;
    this.streamFresh = false;
    let update: CatalogUpdate;
    try {
      if ('snapshot' in message && message.snapshot) update = fromSnapshot(message.snapshot);
      else if ('delta' in message && message.delta) update = fromDelta(message.delta);
      else return;
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      const version =
        'snapshot' in message && message.snapshot
          ? message.snapshot.version
          : 'delta' in message && message.delta
            ? message.delta.version
            : 0;
      this.logger.warn({ err: err.message, version }, 'rejecting an update that cannot be applied');
      this.send({ nack: { version, reason: err.message } });
      return;
    }
    if (update.kind === 'delta') {
      // Applies only on top of what we have: the same epoch, or the first answer to our Hello (a resync).
      // Whole-service upserts make a delta from `base` correct on any state between base and its version.
      const tip = this.inbox.at(-1) ?? (this.currentStream === this.stream ? this.current : null);
      const base = tip ?? this.appliedHead;
      const sameEpoch = update.epoch === base.epoch || (fresh && tip === null);
      if (!sameEpoch || update.baseVersion !== base.version) {
        this.logger.debug(
          { version: update.version, base: update.baseVersion },
          'dropping a delta for another base',
        );
        return;
      }
    }
    this.inbox.push(update);
    this.deliver();
  }

  private deliver(): void {
    if (this.current !== null) return;
    const next = this.inbox.shift();
    if (!next) return;
    this.current = next;
    this.currentStream = this.stream;
    this.options.onUpdate(next);
  }
}

function toWireResult(r: HealthResult) {
  return {
    service: r.service,
    address: r.address,
    port: r.port ?? 0,
    state: toWireHealth(r.state),
    reason: r.reason,
  };
}

function fromSnapshot(s: WireSnapshot): CatalogUpdate {
  return {
    kind: 'snapshot',
    epoch: s.epoch,
    version: s.version,
    baseVersion: 0,
    domain: s.domain,
    upserts: s.services.map(fromWireService),
    deletes: [],
  };
}

function fromDelta(d: WireDelta): CatalogUpdate {
  return {
    kind: 'delta',
    epoch: d.epoch,
    version: d.version,
    baseVersion: d.baseVersion,
    domain: d.domain,
    upserts: d.upserts.map(fromWireService),
    deletes: [...d.deletes],
  };
}
