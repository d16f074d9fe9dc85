import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { normaliseIp } from './catalog/address';
import type { Backend, Service } from './catalog/types';

/**
 * The wire protocol (proto/sluice.proto): loading, TypeScript shapes of the messages as @grpc/proto-loader
 * decodes them (camelCase, enums as strings, uint64 as number, defaults filled), and conversion between
 * the catalog model and the wire. Shared by the server and controller/agent-client.ts.
 */

export const SERVICE_NAME = 'sluice.v1.Controller';

function protoPath(): string {
  for (const candidate of [join(__dirname, '..', 'proto'), join(__dirname, '..', '..', 'proto')]) {
    if (existsSync(join(candidate, 'sluice.proto'))) return join(candidate, 'sluice.proto');
  }
  throw new Error(`proto/sluice.proto not found near ${__dirname}`);
}

export const PROTO_PATH = protoPath();

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  oneofs: true,
};

let packageDefinition: protoLoader.PackageDefinition | undefined;
/** The loaded package definition (also what server reflection describes). */
export function loadPackageDefinition(): protoLoader.PackageDefinition {
  packageDefinition ??= protoLoader.loadSync(PROTO_PATH, LOADER_OPTIONS);
  return packageDefinition;
}

// ---- wire shapes ----

export type WireHealthState = 'HEALTH_UNKNOWN' | 'HEALTHY' | 'UNHEALTHY';

export interface WireBackend {
  address: string;
  port: number;
  weight: number;
  node: string;
  zone: string;
  health: WireHealthState;
  healthReason: string;
}

export interface WireService {
  key: string;
  name: string;
  namespace: string;
  revision: string;
  vips: string[];
  /** Absent from an older controller: none. */
  externalIps?: string[];
  ports: { name: string; port: number; targetPort: number; protocol: string }[];
  algorithm: string;
  affinity: { mode: string; timeoutMs: number } | null;
  trafficDistribution: string;
  healthCheck: {
    protocol: string;
    path: string;
    service: string;
    port: number;
    intervalMs: number;
    timeoutMs: number;
    healthyThreshold: number;
    unhealthyThreshold: number;
    expectedStatusMin: number;
    expectedStatusMax: number;
  } | null;
  outlierDetection: {
    consecutiveFailures: number;
    baseEjectionTimeMs: number;
    maxEjectionPercent: number;
  } | null;
  backends: WireBackend[];
}

export interface WireSnapshot {
  epoch: string;
  version: number;
  domain: string;
  services: readonly WireService[];
}

export interface WireDelta {
  epoch: string;
  version: number;
  baseVersion: number;
  domain: string;
  upserts: readonly WireService[];
  deletes: readonly string[];
}

export interface WireBackendRef {
  service: string;
  address: string;
  port: number;
}

export type ControllerMessage =
  | { kind?: 'snapshot'; snapshot: WireSnapshot }
  | { kind?: 'delta'; delta: WireDelta }
  | { kind?: 'probes'; probes: { backends: readonly WireBackendRef[] } };

export interface WireHello {
  node: string;
  zone: string;
  epoch: string;
  version: number;
  services: { key: string; revision: string }[];
  agentVersion: string;
}

export interface WireHealthResult {
  service: string;
  address: string;
  port: number;
  state: WireHealthState;
  reason: string;
}

/** A passive (outlier) ejection starting or ending in one agent's kernel (HealthReport.outliers). */
export interface WireOutlierEjection {
  service: string;
  address: string;
  port: number;
  vip: string;
  vipPort: number;
  protocol: string;
  ejected: boolean;
  ejectedForMs: number;
  consecutiveFailures: number;
  consecutiveEjections: number;
  ejections: number;
  reason: string;
}

export type AgentMessage =
  | { kind?: 'hello'; hello: WireHello }
  | { kind?: 'ack'; ack: { version: number } }
  | { kind?: 'nack'; nack: { version: number; reason: string } }
  | { kind?: 'health'; health: { results: WireHealthResult[]; outliers?: WireOutlierEjection[] } };

/** Marks a message the server could not decode; the stream is then ended with INVALID_ARGUMENT. */
export interface Malformed {
  readonly malformed: string;
}

// ---- serialisation: encode each controller message once, whatever the number of agents ----

const encoded = new WeakMap<object, Buffer>();

/**
 * The Sync method definition with two changes to what proto-loader builds: responses are encoded once per
 * message object (the same Delta object goes to every agent), and undecodable requests become a
 * `Malformed` marker instead of an exception, so the handler can end that stream with a clear status.
 */
export function syncMethodDefinition(): grpc.MethodDefinition<AgentMessage | Malformed, ControllerMessage> {
  const service = loadPackageDefinition()[SERVICE_NAME] as protoLoader.ServiceDefinition;
  const sync = service.Sync as unknown as grpc.MethodDefinition<AgentMessage, ControllerMessage>;
  return {
    ...sync,
    requestSerialize: sync.requestSerialize as grpc.serialize<AgentMessage | Malformed>,
    responseSerialize: (message: ControllerMessage) => {
      let buf = encoded.get(message);
      if (buf === undefined) {
        buf = sync.responseSerialize(message);
        encoded.set(message, buf);
      }
      return buf;
    },
    requestDeserialize: (bytes: Buffer): AgentMessage | Malformed => {
      try {
        const message = sync.requestDeserialize(bytes);
        if (!message || typeof message !== 'object' || !('kind' in message) || !message.kind)
          return { malformed: 'message has no hello, ack, nack or health field' };
        return message;
      } catch (err) {
        return { malformed: `undecodable message: ${(err as Error).message}` };
      }
    },
  };
}

export function controllerServiceDefinition(): grpc.ServiceDefinition {
  return { Sync: syncMethodDefinition() } as unknown as grpc.ServiceDefinition;
}

// ---- model <-> wire ----

export type HealthState = 'unknown' | 'healthy' | 'unhealthy';

export interface BackendHealth {
  readonly state: HealthState;
  readonly reason: string;
}

/** A backend as distributed by the controller: the catalog's backend plus its merged health. */
export interface SyncedBackend extends Backend {
  readonly health: HealthState;
  readonly healthReason: string;
}

/** A service as distributed by the controller: the catalog's service, a content revision, and health. */
export interface SyncedService extends Service {
  readonly revision: string;
  readonly backends: readonly SyncedBackend[];
}

const TO_WIRE_HEALTH: Record<HealthState, WireHealthState> = {
  unknown: 'HEALTH_UNKNOWN',
  healthy: 'HEALTHY',
  unhealthy: 'UNHEALTHY',
};
const FROM_WIRE_HEALTH: Record<string, HealthState | undefined> = {
  HEALTH_UNKNOWN: 'unknown',
  HEALTHY: 'healthy',
  UNHEALTHY: 'unhealthy',
};

export function toWireHealth(state: HealthState): WireHealthState {
  return TO_WIRE_HEALTH[state];
}

export function fromWireHealth(state: string): HealthState | null {
  return FROM_WIRE_HEALTH[state] ?? null;
}

/**
 * Builds the wire form of a service with its backends' health, stamped with a content revision (or with
 * `revision` when the caller already has the controller's stamp, as an agent persisting what it got does).
 */
export function toWireService<B extends Backend>(
  service: Omit<Service, 'backends'> & { readonly backends: readonly B[] },
  health: (backend: B) => BackendHealth,
  revision?: string,
): WireService {
  const hc = service.healthCheck;
  const od = service.outlierDetection;
  const wire: WireService = {
    key: service.key,
    name: service.name,
    namespace: service.namespace,
    revision: '',
    vips: [...service.vips],
    externalIps: [...service.externalIPs],
    ports: service.ports.map((p) => ({
      name: p.name ?? '',
      port: p.port,
      targetPort: p.targetPort,
      protocol: p.protocol,
    })),
    algorithm: service.algorithm,
    affinity: { mode: service.affinity.mode, timeoutMs: service.affinity.timeoutMs },
    trafficDistribution: service.trafficDistribution,
    healthCheck: hc
      ? {
          protocol: hc.protocol,
          path: hc.path,
          service: hc.service,
          port: hc.port ?? 0,
          intervalMs: hc.intervalMs,
          timeoutMs: hc.timeoutMs,
          healthyThreshold: hc.healthyThreshold,
          unhealthyThreshold: hc.unhealthyThreshold,
          expectedStatusMin: hc.expectedStatus.min,
          expectedStatusMax: hc.expectedStatus.max,
        }
      : null,
    outlierDetection: od
      ? {
          consecutiveFailures: od.consecutiveFailures,
          baseEjectionTimeMs: od.baseEjectionTimeMs,
          maxEjectionPercent: od.maxEjectionPercent,
        }
      : null,
    backends: service.backends.map((b) => {
      const h = health(b);
      return {
        address: b.address,
        port: b.port ?? 0,
        weight: b.weight,
        node: b.node ?? '',
        zone: b.zone ?? '',
        health: TO_WIRE_HEALTH[h.state],
        healthReason: h.reason,
      };
    }),
  };
  wire.revision = revision ?? createHash('sha256').update(JSON.stringify(wire)).digest('hex').slice(0, 16);
  return Object.freeze(wire);
}

/** A message from the controller that the agent cannot apply (the agent NACKs with this message). */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

function oneOf<T extends string>(value: string, allowed: readonly T[], what: string): T {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new ProtocolError(`${what}: unknown value '${value}'`);
}

function address(text: string, what: string): string {
  const ip = normaliseIp(text);
  if (ip === null) throw new ProtocolError(`${what}: '${text}' is not an IP address`);
  return ip;
}

/** Converts a wire service back to the model, checking what the data plane relies on. Throws ProtocolError. */
export function fromWireService(w: WireService): SyncedService {
  const at = `service ${w.key}`;
  if (w.key !== `${w.namespace}/${w.name}`)
    throw new ProtocolError(`${at}: key does not match namespace/name`);
  const hc = w.healthCheck;
  const od = w.outlierDetection;
  return {
    key: w.key,
    name: w.name,
    namespace: w.namespace,
    revision: w.revision,
    vips: w.vips.map((v) => address(v, `${at} vip`)),
    externalIPs: (w.externalIps ?? []).map((v) => address(v, `${at} external IP`)),
    ports: w.ports.map((p) => ({
      name: p.name === '' ? null : p.name,
      port: p.port,
      targetPort: p.targetPort,
      protocol: oneOf(p.protocol, ['TCP', 'UDP'] as const, `${at} port protocol`),
    })),
    algorithm: oneOf(
      w.algorithm,
      ['random', 'weighted', 'round-robin', 'least-connections'] as const,
      `${at} algorithm`,
    ),
    affinity: {
      mode: oneOf(w.affinity?.mode ?? 'none', ['none', 'client'] as const, `${at} affinity mode`),
      timeoutMs: w.affinity?.timeoutMs ?? 0,
    },
    trafficDistribution: oneOf(
      w.trafficDistribution,
      ['any', 'PreferNode', 'PreferZone'] as const,
      `${at} trafficDistribution`,
    ),
    healthCheck: hc
      ? {
          protocol: oneOf(hc.protocol, ['tcp', 'http', 'grpc'] as const, `${at} healthCheck protocol`),
          path: hc.path,
          service: hc.service,
          port: hc.port === 0 ? null : hc.port,
          intervalMs: hc.intervalMs,
          timeoutMs: hc.timeoutMs,
          healthyThreshold: hc.healthyThreshold,
          unhealthyThreshold: hc.unhealthyThreshold,
          expectedStatus: { min: hc.expectedStatusMin, max: hc.expectedStatusMax },
        }
      : null,
    outlierDetection: od ? { ...od } : null,
    backends: w.backends.map((b) => ({
      address: address(b.address, `${at} backend`),
      port: b.port === 0 ? null : b.port,
      weight: b.weight,
      node: b.node === '' ? null : b.node,
      zone: b.zone === '' ? null : b.zone,
      health: FROM_WIRE_HEALTH[b.health] ?? 'unknown',
      healthReason: b.healthReason,
    })),
  };
}

/** grpc-js client constructor for the Controller service (requests/responses as proto-loader objects). */
export function controllerClientConstructor(): grpc.ServiceClientConstructor {
  const loaded = grpc.loadPackageDefinition(loadPackageDefinition()) as unknown as {
    sluice: { v1: { Controller: grpc.ServiceClientConstructor } };
  };
  return loaded.sluice.v1.Controller;
}
