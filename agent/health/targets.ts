/**
 * Which backends this agent probes, and how: catalog services → probe targets. Pure.
 *
 * Ownership (issue 6): a backend with a node is probed by that node's agent only; external backends
 * are assigned by the controller (ProbeAssignment). In standalone mode the agent probes every backend.
 * Services without a healthCheck are not probed (their backends stay 'unknown', which is eligible).
 */
import { type Backend, backendId, type HealthCheck, type Service } from '../../controller/catalog/types';
import type { HealthCheckSpec, ProbeTarget } from './types';

/** A backend as the controller's protocol names it (port = the backend's own override, or null). */
export interface BackendRef {
  readonly service: string;
  readonly address: string;
  readonly port: number | null;
}

export interface CatalogProbeTarget extends ProbeTarget {
  readonly ref: BackendRef;
}

export type ProbeSelector = (service: Service, backend: Backend) => boolean;

export function refKey(ref: BackendRef): string {
  return `${ref.service}|${backendId(ref)}`;
}

/** Standalone mode: every backend. */
export const probeAll: ProbeSelector = () => true;

/**
 * Controller mode: the backends on this node, plus the ones the controller assigned (its assignment
 * lists node-local backends too; both are accepted so probing starts before the first assignment).
 */
export function probeOwned(node: string, assigned: readonly BackendRef[] = []): ProbeSelector {
  const keys = new Set(assigned.map(refKey));
  return (service, backend) =>
    backend.node === node ||
    keys.has(refKey({ service: service.key, address: backend.address, port: backend.port }));
}

export function checkSpec(check: HealthCheck): HealthCheckSpec {
  return {
    protocol: check.protocol,
    intervalMs: check.intervalMs,
    timeoutMs: check.timeoutMs,
    healthyThreshold: check.healthyThreshold,
    unhealthyThreshold: check.unhealthyThreshold,
    path: check.path,
    expectedStatus: check.expectedStatus,
    grpcService: check.service,
  };
}

/**
 * The probe port: the check's own port, else the backend's port override, else the first service
 * port's targetPort (the serving port).
 */
export function probePort(service: Service, backend: Backend): number | undefined {
  return service.healthCheck?.port ?? backend.port ?? service.ports[0]?.targetPort;
}

export function probeTargets(services: readonly Service[], select: ProbeSelector): CatalogProbeTarget[] {
  const out: CatalogProbeTarget[] = [];
  for (const service of services) {
    const check = service.healthCheck;
    if (!check) continue;
    const spec = checkSpec(check);
    for (const backend of service.backends) {
      // Weight 0 is drained: never programmed, so never probed.
      if (backend.weight === 0 || !select(service, backend)) continue;
      const port = probePort(service, backend);
      if (port === undefined) continue;
      const ref = { service: service.key, address: backend.address, port: backend.port };
      out.push({ key: refKey(ref), service: service.key, address: backend.address, port, check: spec, ref });
    }
  }
  return out;
}
