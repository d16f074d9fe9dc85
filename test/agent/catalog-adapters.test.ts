import { decode, encode } from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { dnsCatalogFrom } from '../../agent/dns/catalog';
import { answerQuery, buildDnsIndex } from '../../agent/dns/zone';
import { probeAll, probeOwned, probeTargets } from '../../agent/health/targets';
import { chooseBackends } from '../../agent/locality';
import { type Catalog, parseCatalog } from '../../controller/catalog';

const YAML = `
domain: mesh.local
services:
  - name: web
    namespace: default
    vip: [10.96.0.10, fd00::10]
    ports:
      - { name: http, port: 80, targetPort: 8080, protocol: TCP }
    trafficDistribution: PreferNode
    healthCheck: { protocol: http, path: /healthz, interval: 1s, timeout: 500ms,
                   healthyThreshold: 2, unhealthyThreshold: 2 }
    backends:
      - { address: 10.0.1.11, weight: 3, node: node-a, zone: zone-1 }
      - { address: 10.0.2.12, port: 8081, weight: 1, node: node-b, zone: zone-2 }
      - { address: 192.0.2.7 }
  - name: api
    vip: 10.96.0.20
    ports: [{ port: 9000 }]
    healthCheck: { protocol: grpc, service: api.v1.Api, port: 9001 }
    backends:
      - { address: 10.0.1.21, node: node-a }
  - name: plain
    vip: 10.96.0.30
    ports: [{ port: 7000 }]
    backends:
      - { address: 10.0.1.31, node: node-a }
`;

function catalog(): Catalog {
  const parsed = parseCatalog(YAML, 'test.yaml');
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  return parsed.catalog;
}

describe('probeTargets from the catalog', () => {
  it('probes this node’s backends on their serving port with the service’s check', () => {
    const targets = probeTargets(catalog().services, probeOwned('node-a'));
    expect(targets.map((t) => [t.key, t.address, t.port, t.check.protocol])).toEqual([
      ['default/web|10.0.1.11:0', '10.0.1.11', 8080, 'http'],
      ['default/api|10.0.1.21:0', '10.0.1.21', 9001, 'grpc'],
    ]);
    expect(targets[0]?.check).toEqual({
      protocol: 'http',
      intervalMs: 1000,
      timeoutMs: 500,
      healthyThreshold: 2,
      unhealthyThreshold: 2,
      path: '/healthz',
      expectedStatus: { min: 200, max: 399 },
      grpcService: '',
    });
    expect(targets[1]?.check.grpcService).toBe('api.v1.Api');
    expect(targets[0]?.ref).toEqual({ service: 'default/web', address: '10.0.1.11', port: null });
  });

  it('adds external backends the controller assigned, and uses a backend port override', () => {
    const targets = probeTargets(
      catalog().services,
      probeOwned('node-b', [{ service: 'default/web', address: '192.0.2.7', port: null }]),
    );
    expect(targets.map((t) => [t.key, t.port])).toEqual([
      ['default/web|10.0.2.12:8081', 8081],
      ['default/web|192.0.2.7:0', 8080],
    ]);
  });

  it('standalone probes every backend of every checked service', () => {
    expect(probeTargets(catalog().services, probeAll)).toHaveLength(4);
  });
});

describe('dnsCatalogFrom', () => {
  it('serves the parsed catalog', () => {
    const index = buildDnsIndex(dnsCatalogFrom(catalog().domain, catalog().services, 12));
    const ask = (name: string, type: 'A' | 'AAAA' | 'SRV') =>
      decode(
        encode(
          answerQuery(index, decode(encode({ type: 'query', id: 1, questions: [{ name, type }] })))!.packet,
        ),
      );
    expect(
      ask('web.default.svc.mesh.local', 'AAAA').answers?.map((a) => ('data' in a ? a.data : '')),
    ).toEqual(['fd00::10']);
    expect(ask('_http._tcp.web.default.svc.mesh.local', 'SRV').answers).toHaveLength(1);
    expect(ask('api.default.svc.mesh.local', 'A').answers?.map((a) => ('data' in a ? a.data : ''))).toEqual([
      '10.96.0.20',
    ]);
    expect(index.serial).toBe(12);
  });
});

describe('chooseBackends on catalog backends', () => {
  it('accepts the catalog’s backends (null node and zone for externals)', () => {
    const web = catalog().services[0]!;
    const backends = web.backends.map((b) => ({ ...b, health: 'unknown' as const }));
    const choice = chooseBackends({
      backends,
      trafficDistribution: web.trafficDistribution,
      node: 'node-a',
      zone: 'zone-1',
    });
    expect(choice.tier).toBe('node');
    expect(choice.backends.map((b) => b.address)).toEqual(['10.0.1.11']);
  });
});
