/** The DNS zone's input from the controller's catalog model (controller/catalog/types.ts). Pure. */
import type { Service } from '../../controller/catalog/types';
import type { DnsCatalogInput } from './zone';

export function dnsCatalogFrom(
  domain: string,
  services: readonly Pick<Service, 'name' | 'namespace' | 'vips' | 'ports'>[],
  version?: number | bigint,
): DnsCatalogInput {
  return {
    domain,
    version,
    services: services.map((s) => ({
      name: s.name,
      namespace: s.namespace,
      vip: s.vips,
      ports: s.ports.map((p) => ({ name: p.name ?? undefined, port: p.port, protocol: p.protocol })),
    })),
  };
}
