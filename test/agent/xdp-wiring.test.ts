/**
 * The agent's side of the XDP load balancer that needs no kernel: which programmed services it takes
 * (external IPs only, draining backends as draining), and external IPs crossing the controller's wire.
 * The kernel side (attach, adopt across a restart, detach, metrics) is test/e2e/xdp-agent.test.ts.
 */
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { planServices } from '../../agent/node-agent';
import { xdpServices } from '../../agent/xdp-wiring';
import { type Catalog, parseCatalog } from '../../controller/catalog';
import {
  fromWireService,
  LOADER_OPTIONS,
  PROTO_PATH,
  toWireService,
  type WireService,
} from '../../controller/protocol';

function parse(yaml: string): Catalog {
  const result = parseCatalog(yaml, 'test.yaml');
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.catalog;
}

const catalog = parse(`
services:
  - name: web
    vip: 10.96.0.10
    externalIPs: [192.0.2.10]
    trafficDistribution: PreferNode
    ports: [{ name: http, port: 80 }, { name: dns, port: 53, protocol: UDP }]
    backends:
      - { address: 10.0.1.11, node: node-a, weight: 2 }
      - { address: 10.0.1.12, node: node-b }
      - { address: 10.0.1.13, node: node-b, weight: 0 }
  - name: internal
    vip: 10.96.0.11
    ports: [{ port: 80, targetPort: 8080 }]
    backends: [{ address: 10.0.1.21 }]
`);

describe('external IPs in the agent', () => {
  it('are programmed like VIPs (socket-LB) and flagged for the XDP balancer', () => {
    const plan = planServices({ catalog, node: 'node-a', health: () => 'healthy', ejected: () => false });
    expect(plan.services.map((s) => [s.vip, s.port, s.protocol, s.external ?? false])).toEqual([
      ['10.96.0.10', 80, 'TCP', false],
      ['10.96.0.10', 53, 'UDP', false],
      ['192.0.2.10', 80, 'TCP', true],
      ['192.0.2.10', 53, 'UDP', true],
      ['10.96.0.11', 80, 'TCP', false],
    ]);
  });

  it('become XDP services: external ones only, backends outside the locality tier draining', () => {
    const plan = planServices({
      catalog,
      node: 'node-a',
      health: () => 'healthy',
      ejected: () => false,
    });
    // node-a's own backend serves (PreferNode); node-b's drains; the weight-0 one is not there at all.
    const backends = [
      { address: '10.0.1.11', weight: 2, state: 'active' },
      { address: '10.0.1.12', weight: 1, state: 'draining' },
    ];
    expect(xdpServices(plan.services)).toEqual([
      { address: '192.0.2.10', port: 80, protocol: 'tcp', backends },
      { address: '192.0.2.10', port: 53, protocol: 'udp', backends },
    ]);
    // An unhealthy backend leaves selection: the next tier serves, the unhealthy one drains.
    const failed = planServices({
      catalog,
      node: 'node-a',
      health: (_, b) => (b.address === '10.0.1.11' ? 'unhealthy' : 'healthy'),
      ejected: () => false,
    });
    expect(xdpServices(failed.services)[0]?.backends).toEqual([
      { address: '10.0.1.11', weight: 2, state: 'draining' },
      { address: '10.0.1.12', weight: 1, state: 'active' },
    ]);
  });

  it('cross the controller wire (protobuf encode and decode) intact', () => {
    const type = protobuf.loadSync(PROTO_PATH).lookupType('sluice.v1.Service');
    const web = catalog.services[0]!;
    const wire = toWireService(web, () => ({ state: 'healthy', reason: '' }));
    const decoded = type.toObject(type.decode(type.encode(type.fromObject(wire)).finish()), {
      ...LOADER_OPTIONS,
      longs: Number,
      enums: String,
    }) as WireService;
    expect(decoded.externalIps).toEqual(['192.0.2.10']);
    expect(fromWireService(decoded).externalIPs).toEqual(['192.0.2.10']);
    // An older controller sends no external IPs: none.
    expect(fromWireService({ ...wire, externalIps: undefined }).externalIPs).toEqual([]);
  });
});
