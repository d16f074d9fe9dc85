/**
 * The normalised service catalog model. Every value here has been validated and has its defaults filled
 * in (see defaults.ts); catalogs returned by parseCatalog() are deep-frozen.
 *
 * This model is shared by the controller, the agent (standalone mode parses the same file) and the wire
 * conversion in controller/protocol.ts. Keep it stable: changes ripple into both daemons.
 */

export type Protocol = 'TCP' | 'UDP';
export type Algorithm = 'random' | 'weighted' | 'round-robin' | 'least-connections';
export type AffinityMode = 'none' | 'client';
export type TrafficDistribution = 'any' | 'PreferNode' | 'PreferZone';
export type HealthCheckProtocol = 'tcp' | 'http' | 'grpc';

/** One port a service exposes on its VIP(s). */
export interface ServicePort {
  /** Port name, used for DNS SRV records; null when the service has a single unnamed port. */
  readonly name: string | null;
  /** Port on the VIP. */
  readonly port: number;
  /** Port on the backends (unless the backend overrides it with its own `port`). */
  readonly targetPort: number;
  readonly protocol: Protocol;
}

export interface Backend {
  /** Normalised IP address (IPv4 dotted quad, or IPv6 in lowercase compressed form). */
  readonly address: string;
  /** Overrides every port's targetPort for this backend; null means use targetPort. */
  readonly port: number | null;
  /** Relative weight, 0 drains the backend (kept, never selected). */
  readonly weight: number;
  /** Node the backend runs on; null for an external backend (probed by two agents chosen by the controller). */
  readonly node: string | null;
  readonly zone: string | null;
}

export interface HealthCheck {
  readonly protocol: HealthCheckProtocol;
  /** HTTP path (http only, starts with '/'). */
  readonly path: string;
  /** gRPC health service name (grpc only, '' checks the server as a whole). */
  readonly service: string;
  /** Probe port; null means the backend's serving port (its `port` or the first port's targetPort). */
  readonly port: number | null;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
  /** Accepted HTTP status codes, inclusive (http only). */
  readonly expectedStatus: { readonly min: number; readonly max: number };
}

export interface OutlierDetection {
  readonly consecutiveFailures: number;
  readonly baseEjectionTimeMs: number;
  readonly maxEjectionPercent: number;
}

export interface Affinity {
  readonly mode: AffinityMode;
  readonly timeoutMs: number;
}

export interface Service {
  /** Stable identity: `namespace/name`. */
  readonly key: string;
  readonly name: string;
  readonly namespace: string;
  /** One or two VIPs (at most one per address family), normalised, IPv4 first. */
  readonly vips: readonly string[];
  /**
   * Addresses that reach the service from outside the node (Kubernetes `externalIPs`), normalised, in file
   * order; empty when none. The XDP load balancer balances them with direct server return, which keeps the
   * destination port, so such a service has targetPort == port and no backend port override.
   */
  readonly externalIPs: readonly string[];
  readonly ports: readonly ServicePort[];
  readonly algorithm: Algorithm;
  readonly affinity: Affinity;
  readonly trafficDistribution: TrafficDistribution;
  /** null: backends are not probed (their health stays 'unknown'). */
  readonly healthCheck: HealthCheck | null;
  /** null: passive ejection is off. */
  readonly outlierDetection: OutlierDetection | null;
  readonly backends: readonly Backend[];
}

export interface Catalog {
  /** DNS suffix: <name>.<namespace>.svc.<domain>. */
  readonly domain: string;
  /** Services in file order; keys are unique. */
  readonly services: readonly Service[];
}

/** One validation error: `path` like `services[2].backends[0].weight`, `message` the reason. */
export interface CatalogError {
  readonly path: string;
  readonly message: string;
}

export type CatalogParseResult =
  | { readonly ok: true; readonly catalog: Catalog }
  | { readonly ok: false; readonly errors: readonly CatalogError[] };

/** Identity key of a service. */
export function serviceKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** Identity of a backend within its service: `address:port` with port 0 when it has none ([v6]:port for IPv6). */
export function backendId(backend: Pick<Backend, 'address' | 'port'>): string {
  const port = backend.port ?? 0;
  return backend.address.includes(':') ? `[${backend.address}]:${port}` : `${backend.address}:${port}`;
}
