import { type Answer, type DecodedPacket, decode, encode, type Packet, RECURSION_DESIRED } from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { answerQuery, buildDnsIndex, type DnsCatalogInput, encodeForUdp, RCODE } from '../../agent/dns/zone';

const catalog: DnsCatalogInput = {
  domain: 'mesh.local',
  version: 7,
  services: [
    {
      name: 'web',
      namespace: 'default',
      vip: ['10.96.0.10', 'fd00::10'],
      ports: [
        { name: 'http', port: 80, protocol: 'TCP' },
        { port: 8443, protocol: 'TCP' },
      ],
    },
    {
      name: 'dns',
      namespace: 'kube-system',
      vip: '10.96.0.53',
      ports: [{ name: 'dns', port: 53, protocol: 'UDP' }],
    },
  ],
};
const index = buildDnsIndex(catalog);

/** Sends a query through encode/decode, as it would arrive on the wire. */
function ask(name: string, type: string, extra: Partial<Packet> = {}): DecodedPacket {
  const wire = encode({
    type: 'query',
    id: 4242,
    flags: RECURSION_DESIRED,
    questions: [{ name, type: type as 'A' }],
    ...extra,
  });
  const response = answerQuery(index, decode(wire));
  if (!response) throw new Error('no response');
  return decode(encodeForUdp(response));
}

const rcodeOf = (p: DecodedPacket) => (p.flags ?? 0) & 0xf;
const data = (answers: Answer[] | undefined) =>
  (answers ?? []).map((a) => ('data' in a ? a.data : undefined));

describe('buildDnsIndex', () => {
  it('indexes services, SRV names and empty non-terminals', () => {
    expect([...index.names.keys()].sort()).toEqual([
      '_dns._udp.dns.kube-system.svc.mesh.local',
      '_http._tcp.web.default.svc.mesh.local',
      'dns.kube-system.svc.mesh.local',
      'web.default.svc.mesh.local',
    ]);
    expect([...index.emptyNonTerminals].sort()).toEqual([
      '_tcp.web.default.svc.mesh.local',
      '_udp.dns.kube-system.svc.mesh.local',
      'default.svc.mesh.local',
      'kube-system.svc.mesh.local',
      'svc.mesh.local',
    ]);
    expect(index).toMatchObject({ domain: 'mesh.local', ttl: 5, serial: 7 });
  });

  it.each([
    [{ ...catalog, domain: 'bad_domain' }, 'domain: "bad_domain" is not a valid DNS domain'],
    [
      { ...catalog, services: [{ ...catalog.services[0]!, name: 'Web_1' }] },
      'services[0].name: "Web_1" is not a valid DNS label',
    ],
    [
      { ...catalog, services: [{ ...catalog.services[0]!, vip: '10.96.0' }] },
      'services[0].vip: "10.96.0" is not an IP address',
    ],
    [
      { ...catalog, services: [catalog.services[1]!, catalog.services[1]!] },
      'services[1]: kube-system/dns is listed twice',
    ],
    [
      { ...catalog, services: [{ ...catalog.services[1]!, ports: [{ name: 'dns over udp', port: 53 }] }] },
      'services[0].ports[0].name: "dns over udp" is not a valid port name for SRV',
    ],
  ])('rejects bad input naming the path (%#)', (input, message) => {
    expect(() => buildDnsIndex(input as DnsCatalogInput)).toThrow(message);
  });

  it('rejects a bad TTL and wraps the serial to 32 bits', () => {
    expect(() => buildDnsIndex(catalog, { ttl: -1 })).toThrow('ttl: must be 0-86400 seconds, got -1');
    expect(buildDnsIndex({ ...catalog, version: 2n ** 32n + 5n }).serial).toBe(5);
  });
});

describe('answerQuery', () => {
  it('answers A and AAAA authoritatively with the short TTL, echoing id, RD and the question case', () => {
    const a = ask('Web.Default.SVC.mesh.local', 'A');
    expect(a.id).toBe(4242);
    expect(a.flag_aa).toBe(true);
    expect(a.flag_rd).toBe(true);
    expect(a.flag_ra).toBe(false);
    expect(rcodeOf(a)).toBe(RCODE.NOERROR);
    expect(a.answers).toEqual([
      {
        type: 'A',
        name: 'Web.Default.SVC.mesh.local',
        ttl: 5,
        class: 'IN',
        flush: false,
        data: '10.96.0.10',
      },
    ]);
    expect(data(ask('web.default.svc.mesh.local.', 'AAAA').answers)).toEqual(['fd00::10']);
    expect(data(ask('web.default.svc.mesh.local', 'ANY').answers)).toEqual(['10.96.0.10', 'fd00::10']);
  });

  it('NODATA with the SOA when the name exists but not the type', () => {
    const r = ask('dns.kube-system.svc.mesh.local', 'AAAA');
    expect(rcodeOf(r)).toBe(RCODE.NOERROR);
    expect(r.answers).toEqual([]);
    expect(r.authorities?.[0]).toMatchObject({
      type: 'SOA',
      name: 'mesh.local',
      ttl: 5,
      data: { mname: 'ns.dns.mesh.local', rname: 'hostmaster.mesh.local', serial: 7, minimum: 5 },
    });
    expect(rcodeOf(ask('web.default.svc.mesh.local', 'TXT'))).toBe(RCODE.NOERROR);
  });

  it('NODATA for empty non-terminals, NXDOMAIN for unknown names under the domain', () => {
    for (const name of ['default.svc.mesh.local', 'svc.mesh.local', '_tcp.web.default.svc.mesh.local']) {
      const r = ask(name, 'A');
      expect([name, rcodeOf(r), r.answers?.length]).toEqual([name, RCODE.NOERROR, 0]);
    }
    for (const name of [
      'nope.default.svc.mesh.local',
      'web.other.svc.mesh.local',
      'x.web.default.svc.mesh.local',
    ]) {
      const r = ask(name, 'A');
      expect([name, rcodeOf(r)]).toEqual([name, RCODE.NXDOMAIN]);
      expect(r.flag_aa).toBe(true);
      expect(r.authorities?.[0]?.type).toBe('SOA');
    }
    expect(rcodeOf(ask('_grpc._tcp.web.default.svc.mesh.local', 'SRV'))).toBe(RCODE.NXDOMAIN);
  });

  it('REFUSED for names outside the domain, and for other classes', () => {
    for (const name of ['example.com', 'mesh.local.evil.com', 'notmesh.local']) {
      const r = ask(name, 'A');
      expect([name, rcodeOf(r), r.flag_aa, r.answers?.length]).toEqual([name, RCODE.REFUSED, false, 0]);
    }
    const chaos = ask('web.default.svc.mesh.local', 'A', {
      questions: [{ name: 'web.default.svc.mesh.local', type: 'A', class: 'CH' }],
    });
    expect(rcodeOf(chaos)).toBe(RCODE.REFUSED);
  });

  it('SRV for named ports, with the target addresses as additional records', () => {
    const r = ask('_http._tcp.web.default.svc.mesh.local', 'SRV');
    expect(data(r.answers)).toEqual([
      { priority: 0, weight: 100, port: 80, target: 'web.default.svc.mesh.local' },
    ]);
    expect(data(r.additionals)).toEqual(['10.96.0.10', 'fd00::10']);
    const udp = ask('_DNS._udp.dns.kube-system.svc.mesh.local', 'SRV');
    expect(data(udp.answers)).toEqual([
      { priority: 0, weight: 100, port: 53, target: 'dns.kube-system.svc.mesh.local' },
    ]);
    // The service name itself has no SRV records.
    expect(ask('web.default.svc.mesh.local', 'SRV').answers).toEqual([]);
  });

  it('answers SOA at the apex and NODATA for other apex types', () => {
    const r = ask('mesh.local', 'SOA');
    expect(r.answers?.[0]).toMatchObject({ type: 'SOA', name: 'mesh.local' });
    expect(ask('mesh.local', 'A').answers).toEqual([]);
    expect(rcodeOf(ask('mesh.local', 'NS'))).toBe(RCODE.NOERROR);
  });

  it('NOTIMP for other opcodes, FORMERR for several questions, nothing for responses', () => {
    const notify = ask('web.default.svc.mesh.local', 'A', { flags: 4 << 11 });
    expect([rcodeOf(notify), (notify.flags! >> 11) & 0xf]).toEqual([RCODE.NOTIMP, 4]);
    const two = ask('web.default.svc.mesh.local', 'A', {
      questions: [
        { name: 'web.default.svc.mesh.local', type: 'A' },
        { name: 'dns.kube-system.svc.mesh.local', type: 'A' },
      ],
    });
    expect(rcodeOf(two)).toBe(RCODE.FORMERR);
    const response = decode(
      encode({ type: 'response', id: 1, questions: [{ name: 'mesh.local', type: 'A' }] }),
    );
    expect(answerQuery(index, response)).toBeUndefined();
  });

  it('echoes EDNS and truncates oversize UDP answers with TC', () => {
    const many = buildDnsIndex({
      domain: 'mesh.local',
      services: [
        {
          name: 'big',
          namespace: 'default',
          vip: Array.from({ length: 20 }, (_, i) => `10.1.0.${i}`),
          ports: [],
        },
      ],
    });
    const query = (edns: boolean) =>
      decode(
        encode({
          type: 'query',
          id: 9,
          questions: [{ name: 'big.default.svc.mesh.local', type: 'A' }],
          additionals: edns ? [{ type: 'OPT', name: '.', udpPayloadSize: 4096 } as unknown as Answer] : [],
        }),
      );
    const classic = answerQuery(many, query(false))!;
    expect(classic.udpLimit).toBe(512);
    const truncated = decode(encodeForUdp(classic));
    expect(truncated.flag_tc).toBe(true);
    expect(truncated.answers).toEqual([]);
    expect(truncated.questions?.[0]?.name).toBe('big.default.svc.mesh.local');
    // 20 A records (~900 bytes: no name compression) fit in 1232: with EDNS the full answer goes over UDP.
    const edns = answerQuery(many, query(true))!;
    expect(edns.udpLimit).toBe(1232);
    const full = decode(encodeForUdp(edns));
    expect(full.flag_tc).toBe(false);
    expect(full.answers).toHaveLength(20);
    expect(full.additionals?.find((a) => a.type === 'OPT')).toMatchObject({ udpPayloadSize: 1232 });
  });
});
