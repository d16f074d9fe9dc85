/**
 * The XDP load balancer through BPF_PROG_TEST_RUN: a table of packet cases with their documented
 * verdicts, the encapsulated output checked header by header (checksums recomputed here), flows
 * sticking to their backend across backend-set changes, and the counters.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { ipToBytes16 } from '../../agent/abi/ip';
import {
  u32Buffer,
  vipFilterSlot,
  XDP_DECAP_PROGRAM,
  XDP_LB_CONN_WAYS,
  XDP_LB_PROGRAM,
  XdpAction,
  XdpMaps,
  type XdpReasonName,
} from '../../agent/abi/xdp';
import { type XdpLbConfig, XdpLoadBalancer, type XdpServiceSpec } from '../../agent/xdp/datapath';
import { type FlowTuple, maglevSlot } from '../../agent/xdp/flow-hash';
import { buildMaglevTable } from '../../agent/xdp/maglev';
import { bpf, TestRunFlags } from '../../native/index';
import { describePrivileged } from '../support/privileged';
import { useSandbox } from '../support/sandbox';
import {
  CLIENT_MAC,
  ethernet,
  type FrameSpec,
  frame,
  ipPacket,
  l4ChecksumOk,
  NODE_MAC,
  parseFrame,
  TCP_ACK,
  TCP_PSH,
  TCP_SYN,
} from '../support/xdp-packets';

const OBJECT_DIR = resolve(__dirname, '../../build/bpf');
const SEED = 0x5eed1234;
const CONFIG: XdpLbConfig = {
  hashSeed: SEED,
  maxVips: 8,
  maxBackends: 64,
  maxConns: 4096,
  encapSource4: '192.0.2.1',
  encapSource6: 'fd00:ff::1',
};

const WEB4: XdpServiceSpec = {
  address: '10.96.0.10',
  port: 80,
  protocol: 'tcp',
  backends: [{ address: '10.1.0.11' }, { address: '10.1.0.12' }, { address: '10.1.0.13' }],
};
const DNS4: XdpServiceSpec = {
  address: '10.96.0.10',
  port: 53,
  protocol: 'udp',
  backends: [{ address: '10.1.0.21' }],
};
const WEB6: XdpServiceSpec = {
  address: 'fd00:96::10',
  port: 443,
  protocol: 'tcp',
  backends: [{ address: 'fd00:1::11' }, { address: 'fd00:1::12' }],
};
const MIXED: XdpServiceSpec = {
  address: '10.96.0.20',
  port: 80,
  protocol: 'tcp',
  backends: [{ address: 'fd00:1::31' }],
};
const EMPTY: XdpServiceSpec = { address: '10.96.0.30', port: 80, protocol: 'tcp', backends: [] };

describePrivileged('XDP load balancer (test runs)', () => {
  const sandbox = useSandbox('xdp-lb');
  let lb: XdpLoadBalancer;

  beforeEach(() => {
    lb = XdpLoadBalancer.load(bpf, OBJECT_DIR, CONFIG, { pinRoot: sandbox().bpffsDir });
    for (const service of [WEB4, DNS4, WEB6, MIXED, EMPTY]) lb.setService(service);
  });
  afterEach(() => lb.close());

  const run = (data: Buffer, program = XDP_LB_PROGRAM) => lb.object.program(program).testRun({ data });
  const verdicts = (): Record<XdpReasonName, bigint> =>
    Object.fromEntries(Object.entries(lb.stats().verdicts).map(([k, v]) => [k, v.packets])) as Record<
      XdpReasonName,
      bigint
    >;

  /** The backend address the program must choose for a new flow, from the userspace hash and table. */
  const expectedBackend = (spec: FrameSpec, service: XdpServiceSpec): string => {
    const flow: FlowTuple = {
      source: spec.src,
      sourcePort: spec.sport ?? 40000,
      destination: spec.dst,
      destinationPort: spec.dport ?? 80,
      protocol: spec.protocol === 'tcp' ? 6 : 17,
    };
    const table = lb.table(service.address, service.port, service.protocol)!;
    const id = table[maglevSlot(flow, SEED, lb.config.maglevSize)];
    const backend = service.backends.find((b) => lb.backendId(b.address) === id);
    if (!backend) throw new Error(`slot holds backend id ${id}, which is not in ${service.address}`);
    return backend.address;
  };

  /** Checks an encapsulated frame against its input, header by header; returns the outer destination. */
  const checkEncapsulated = (input: Buffer, output: Buffer, spec: FrameSpec): string => {
    const sent = parseFrame(input);
    const out = parseFrame(output);
    expect(out.dstMac).toEqual(CLIENT_MAC); // back to the sender (no gateway MAC set)
    expect(out.srcMac).toEqual(NODE_MAC);
    expect(out.vlan).toBe(sent.vlan);
    const outer = out.ip;
    const inner = sent.ip;
    if (outer.version === 4) {
      expect(out.ethertype).toBe(0x0800);
      expect(outer.src).toBe(CONFIG.encapSource4);
      expect(outer.headerLength).toBe(20);
      expect(outer.headerChecksumOk).toBe(true);
      expect(outer.length).toBe(inner.length + 20);
    } else {
      expect(out.ethertype).toBe(0x86dd);
      expect(outer.src).toBe('fd00:ff:0:0:0:0:0:1');
      expect(outer.length).toBe(inner.length + 40);
    }
    expect(outer.protocol).toBe(inner.version === 4 ? 4 : 41);
    expect(outer.ttl).toBe(64);
    expect(outer.tos).toBe(spec.tos ?? 0);
    // The inner packet is carried byte for byte, its checksums still valid.
    expect(outer.payload).toEqual(inner.raw);
    const carried = parseFrame(ethernet(inner.version === 4 ? 0x0800 : 0x86dd, outer.payload)).ip;
    if (carried.version === 4) expect(carried.headerChecksumOk).toBe(true);
    expect(l4ChecksumOk(carried)).toBe(true);
    expect(output.length).toBe(input.length + (outer.version === 4 ? 20 : 40));
    return outer.dst;
  };

  it.each<[string, FrameSpec, XdpServiceSpec]>([
    [
      'IPv4 TCP SYN',
      { src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp', sport: 41000, dport: 80 },
      WEB4,
    ],
    [
      'IPv4 TCP SYN with a VLAN tag and TOS',
      {
        src: '198.51.100.8',
        dst: '10.96.0.10',
        protocol: 'tcp',
        sport: 41001,
        dport: 80,
        vlan: 42,
        tos: 0x28,
      },
      WEB4,
    ],
    [
      'IPv4 UDP datagram',
      {
        src: '198.51.100.9',
        dst: '10.96.0.10',
        protocol: 'udp',
        sport: 5353,
        dport: 53,
        payload: Buffer.from('query'),
      },
      DNS4,
    ],
    [
      'IPv6 TCP SYN',
      { src: '2001:db8::7', dst: 'fd00:96::10', protocol: 'tcp', sport: 41002, dport: 443 },
      WEB6,
    ],
    [
      'IPv6 TCP SYN with a VLAN tag and traffic class',
      {
        src: '2001:db8::8',
        dst: 'fd00:96::10',
        protocol: 'tcp',
        sport: 41003,
        dport: 443,
        vlan: 7,
        tos: 0xb8,
      },
      WEB6,
    ],
    [
      'IPv4 VIP, IPv6 backend (4in6)',
      { src: '198.51.100.10', dst: '10.96.0.20', protocol: 'tcp', dport: 80 },
      MIXED,
    ],
  ])('%s → XDP_TX, encapsulated to the Maglev backend', (_, spec, service) => {
    const input = frame(spec);
    const before = verdicts();
    const result = run(input);
    expect(result.retval).toBe(XdpAction.tx);
    const outerDst = checkEncapsulated(input, result.dataOut, spec);
    const expected = expectedBackend(spec, service);
    const normalise = (a: string): string =>
      a.includes(':')
        ? a
            .split(':')
            .map((g) => Number.parseInt(g || '0', 16).toString(16))
            .join(':')
        : a;
    expect(normalise(outerDst)).toBe(normalise(expandV6(expected)));
    expect(verdicts().tx_new_flow).toBe(before.tx_new_flow + 1n);
    // The backend's side gives back the client's packet (decapsulation program).
    const decapped = run(result.dataOut, XDP_DECAP_PROGRAM);
    expect(decapped.retval).toBe(XdpAction.pass);
    expect(decapped.dataOut.subarray(12)).toEqual(input.subarray(12));
  });

  const passCases: [string, Buffer, XdpReasonName, number][] = [
    [
      'another address',
      frame({ src: '198.51.100.7', dst: '10.96.0.99', protocol: 'tcp' }),
      'pass_not_vip',
      XdpAction.pass,
    ],
    [
      'the VIP on another port',
      frame({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp', dport: 8080 }),
      'pass_not_vip',
      XdpAction.pass,
    ],
    [
      'the VIP port with the other protocol',
      frame({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'udp', dport: 80 }),
      'pass_not_vip',
      XdpAction.pass,
    ],
    [
      'ICMP echo to the VIP',
      frame({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'icmp' }),
      'pass_not_tcp_udp',
      XdpAction.pass,
    ],
    [
      'ICMPv6 echo to the VIP',
      frame({ src: '2001:db8::7', dst: 'fd00:96::10', protocol: 'icmp' }),
      'pass_not_tcp_udp',
      XdpAction.pass,
    ],
    [
      'first IPv4 fragment (MF)',
      frame({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp', fragment: 0x2000 }),
      'pass_fragment',
      XdpAction.pass,
    ],
    [
      'later IPv4 fragment (offset)',
      frame({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp', fragment: 0x0010 }),
      'pass_fragment',
      XdpAction.pass,
    ],
    ['IPv6 fragment header', ipv6WithNextHeader(44), 'pass_fragment', XdpAction.pass],
    ['IPv6 hop-by-hop extension header', ipv6WithNextHeader(0), 'pass_not_tcp_udp', XdpAction.pass],
    ['ARP', ethernet(0x0806, Buffer.alloc(28, 1)), 'pass_not_ip', XdpAction.pass],
    [
      'two stacked VLAN tags',
      ethernet(
        0x8100,
        Buffer.concat([
          Buffer.from([0, 5, 8, 0]),
          ipPacket({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp' }),
        ]),
        { vlan: 3 },
      ),
      'pass_not_ip',
      XdpAction.pass,
    ],
    ['Ethernet header only', ethernet(0x0800, Buffer.alloc(0)), 'pass_truncated', XdpAction.pass],
    [
      'VLAN tag cut short',
      Buffer.concat([ethernet(0x8100, Buffer.alloc(0)), Buffer.from([0])]),
      'pass_truncated',
      XdpAction.pass,
    ],
    [
      'IPv4 header cut short',
      ethernet(0x0800, ipPacket({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp' }).subarray(0, 12)),
      'pass_truncated',
      XdpAction.pass,
    ],
    [
      'IPv4 total length beyond the frame',
      ethernet(0x0800, ipPacket({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp' }).subarray(0, 30)),
      'pass_truncated',
      XdpAction.pass,
    ],
    ['TCP header cut short (lengths consistent)', shortTcp(), 'pass_truncated', XdpAction.pass],
    [
      'IPv6 header cut short',
      ethernet(0x86dd, ipPacket({ src: '2001:db8::7', dst: 'fd00:96::10', protocol: 'tcp' }).subarray(0, 30)),
      'pass_truncated',
      XdpAction.pass,
    ],
    [
      'IPv4 header length below 5 words',
      mangle(frame({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp' }), 14, 0x44),
      'pass_malformed',
      XdpAction.pass,
    ],
    [
      'IPv4 ethertype carrying version 6',
      mangle(frame({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp' }), 14, 0x65),
      'pass_malformed',
      XdpAction.pass,
    ],
    [
      'IPv4 total length below the header',
      totalLength(frame({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp' }), 10),
      'pass_malformed',
      XdpAction.pass,
    ],
    [
      'TCP data offset below 5 words',
      mangle(frame({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp' }), 14 + 20 + 12, 0x20),
      'pass_malformed',
      XdpAction.pass,
    ],
    [
      'garbage after an IPv4 ethertype',
      ethernet(0x0800, Buffer.from('ffffffffffffffffffffffffffffffffffffffffffffffff', 'hex')),
      'pass_malformed',
      XdpAction.pass,
    ],
    [
      'garbage',
      Buffer.from('0123456789abcdef0123456789abcdef0123456789abcdef', 'hex'),
      'pass_not_ip',
      XdpAction.pass,
    ],
    [
      'a VIP without backends',
      frame({ src: '198.51.100.7', dst: '10.96.0.30', protocol: 'tcp' }),
      'drop_no_backend',
      XdpAction.drop,
    ],
  ];
  it.each(passCases.map(([name, input, reason, action]) => ({ name, input, reason, action })))(
    '$name → $reason',
    ({ input, reason, action }) => {
      const before = verdicts();
      const result = run(input);
      expect(result.retval).toBe(action);
      if (action === XdpAction.pass) expect(result.dataOut).toEqual(input);
      const after = verdicts();
      for (const [name, count] of Object.entries(after)) {
        expect(count, name).toBe(before[name as XdpReasonName] + (name === reason ? 1n : 0n));
      }
    },
  );

  /** A source port whose Maglev slot moves to another backend when `next` replaces the backend set. */
  const flowThatMoves = (
    next: XdpServiceSpec,
    firstPort = 20000,
  ): { spec: FrameSpec; from: string; to: string } => {
    const tableNow = lb.table(WEB4.address, WEB4.port, WEB4.protocol)!;
    const preview = buildPreview(next);
    for (let port = firstPort; port < 60000; port++) {
      const spec: FrameSpec = {
        src: '198.51.100.50',
        dst: WEB4.address,
        protocol: 'tcp',
        sport: port,
        dport: 80,
      };
      const slot = maglevSlot(
        { source: spec.src, sourcePort: port, destination: spec.dst, destinationPort: 80, protocol: 6 },
        SEED,
        lb.config.maglevSize,
      );
      const from = addressOf(WEB4, tableNow[slot]!);
      const to = preview(slot);
      if (from && to && from !== to) return { spec, from, to };
    }
    throw new Error('no flow moves');
  };
  const addressOf = (service: XdpServiceSpec, id: number): string | undefined =>
    service.backends.find((b) => lb.backendId(b.address) === id)?.address;
  /** The backend a slot would hold after setService(next), computed with the same pure function. */
  const buildPreview = (next: XdpServiceSpec) => {
    return (slot: number): string | undefined => {
      const table = buildMaglevTable(
        next.backends.map((b, i) => ({
          key: b.address,
          id: i + 1,
          weight: (b.state ?? 'active') === 'active' ? (b.weight ?? 1) : 0,
        })),
        { size: lb.config.maglevSize, seed: SEED },
      );
      return next.backends[table[slot]! - 1]?.address;
    };
  };

  it('keeps an established flow on its backend after the backend set changes; a SYN chooses afresh', () => {
    const next: XdpServiceSpec = {
      ...WEB4,
      backends: [...WEB4.backends, { address: '10.1.0.14' }, { address: '10.1.0.15' }],
    };
    const { spec, from, to } = flowThatMoves(next);
    const syn = run(frame({ ...spec, flags: TCP_SYN }));
    expect(checkEncapsulated(frame(spec), syn.dataOut, spec)).toBe(from);

    lb.setService(next);
    const before = verdicts();
    const ack = { ...spec, flags: TCP_ACK | TCP_PSH, payload: Buffer.from('GET / HTTP/1.1\r\n\r\n') };
    for (let i = 0; i < 3; i++) {
      const result = run(frame(ack));
      expect(result.retval).toBe(XdpAction.tx);
      expect(checkEncapsulated(frame(ack), result.dataOut, ack)).toBe(from);
    }
    expect(verdicts().tx_conn_hit).toBe(before.tx_conn_hit + 3n);
    // A new connection on the same 5-tuple (SYN) follows the new table.
    const again = run(frame({ ...spec, flags: TCP_SYN }));
    expect(checkEncapsulated(frame(spec), again.dataOut, spec)).toBe(to);
    expect(run(frame(ack)).dataOut.subarray(30, 34)).toEqual(again.dataOut.subarray(30, 34));
  });

  it('keeps the most recently used flows of a full connection-table set and evicts the oldest', async () => {
    // maxConns flows in sets of XDP_LB_CONN_WAYS; one set: every flow lands in it.
    expect(lb.object.map(XdpMaps.conns).info().maxEntries).toBe(CONFIG.maxConns! / XDP_LB_CONN_WAYS);
    lb.close();
    const pinRoot = join(sandbox().bpffsDir, 'one-set');
    mkdirSync(pinRoot);
    lb = XdpLoadBalancer.load(bpf, OBJECT_DIR, { ...CONFIG, maxConns: XDP_LB_CONN_WAYS }, { pinRoot });
    expect(lb.object.map(XdpMaps.conns).info().maxEntries).toBe(1);
    lb.setService(WEB4);
    const next: XdpServiceSpec = {
      ...WEB4,
      backends: [...WEB4.backends, { address: '10.1.0.14' }, { address: '10.1.0.15' }],
    };
    const flows: { spec: FrameSpec; from: string; to: string }[] = [];
    for (let i = 0; i <= XDP_LB_CONN_WAYS; i++) {
      flows.push(flowThatMoves(next, i ? flows[i - 1]!.spec.sport! + 1 : 20000));
    }
    const send = (spec: FrameSpec, flags: number) => {
      const packet = { ...spec, flags };
      return checkEncapsulated(frame(packet), run(frame(packet)).dataOut, packet);
    };
    for (const flow of flows.slice(0, XDP_LB_CONN_WAYS)) expect(send(flow.spec, TCP_SYN)).toBe(flow.from);
    // The clock of last use is coarse (16 jiffies: 160 ms at HZ=100); after a pause longer than that,
    // the first flow is used again, so the second is now the least recently used: the last flow takes
    // its way (ways used at the same time go lowest first, the order they were filled in).
    await new Promise((r) => setTimeout(r, 250));
    expect(send(flows[0]!.spec, TCP_ACK)).toBe(flows[0]!.from);
    expect(send(flows[XDP_LB_CONN_WAYS]!.spec, TCP_SYN)).toBe(flows[XDP_LB_CONN_WAYS]!.from);

    lb.setService(next);
    flows.forEach((flow, i) => {
      if (i !== 1) expect(send(flow.spec, TCP_ACK), `flow ${i}`).toBe(flow.from);
    });
    // The evicted flow takes a fresh choice (and a way again); a SYN replaces its flow's way, leaving no
    // second entry with the old backend: both follow the new table from now on.
    expect(send(flows[1]!.spec, TCP_ACK)).toBe(flows[1]!.to);
    expect(send(flows[1]!.spec, TCP_ACK)).toBe(flows[1]!.to);
    expect(send(flows[2]!.spec, TCP_SYN)).toBe(flows[2]!.to);
    expect(send(flows[2]!.spec, TCP_ACK)).toBe(flows[2]!.to);
  });

  it('gives draining and unhealthy backends no new flows but keeps their established ones', () => {
    const flows = Array.from(
      { length: 60 },
      (_, i): FrameSpec => ({
        src: '198.51.100.60',
        dst: WEB4.address,
        protocol: 'tcp',
        sport: 30000 + i,
        dport: 80,
      }),
    );
    const first = flows.map((spec) => checkEncapsulated(frame(spec), run(frame(spec)).dataOut, spec));
    expect(new Set(first)).toEqual(new Set(['10.1.0.11', '10.1.0.12', '10.1.0.13']));

    lb.setService({
      ...WEB4,
      backends: [
        { address: '10.1.0.11', state: 'draining' },
        { address: '10.1.0.12', state: 'unhealthy' },
        { address: '10.1.0.13' },
      ],
    });
    const table = lb.table(WEB4.address, WEB4.port, WEB4.protocol)!;
    expect(new Set(table)).toEqual(new Set([lb.backendId('10.1.0.13')]));
    flows.forEach((spec, i) => {
      const ack = { ...spec, flags: TCP_ACK };
      expect(checkEncapsulated(frame(ack), run(frame(ack)).dataOut, ack)).toBe(first[i]);
      const fresh = { ...spec, sport: spec.sport! + 1000 };
      expect(checkEncapsulated(frame(fresh), run(frame(fresh)).dataOut, fresh)).toBe('10.1.0.13');
    });
  });

  it('moves flows of a removed backend to a fresh choice', () => {
    const spec = flowsOn(lb, '10.1.0.12');
    expect(checkEncapsulated(frame(spec), run(frame(spec)).dataOut, spec)).toBe('10.1.0.12');
    lb.setService({ ...WEB4, backends: [{ address: '10.1.0.11' }, { address: '10.1.0.13' }] });
    expect(lb.backendId('10.1.0.12')).toBeUndefined();
    const ack = { ...spec, flags: TCP_ACK };
    const before = verdicts();
    const moved = checkEncapsulated(frame(ack), run(frame(ack)).dataOut, ack);
    expect(['10.1.0.11', '10.1.0.13']).toContain(moved);
    expect(verdicts().tx_new_flow).toBe(before.tx_new_flow + 1n);
  });

  it('counts packets and bytes per VIP, per backend and per verdict', () => {
    const spec: FrameSpec = {
      src: '198.51.100.70',
      dst: WEB4.address,
      protocol: 'tcp',
      sport: 40100,
      dport: 80,
    };
    const backend = expectedBackend(spec, WEB4);
    const input = frame(spec);
    for (let i = 0; i < 5; i++) run(frame({ ...spec, flags: i === 0 ? TCP_SYN : TCP_ACK }));
    run(frame({ src: '198.51.100.70', dst: '10.96.0.99', protocol: 'tcp' }));
    const stats = lb.stats();
    expect(stats.vips.find((v) => v.port === 80 && v.address === WEB4.address)).toMatchObject({
      packets: 5n,
      bytes: BigInt(5 * input.length),
    });
    expect(stats.backends.find((b) => b.address === backend)).toMatchObject({
      packets: 5n,
      bytes: BigInt(5 * input.length),
    });
    expect(stats.verdicts.tx_new_flow.packets).toBe(1n);
    expect(stats.verdicts.tx_conn_hit.packets).toBe(4n);
    expect(stats.verdicts.pass_not_vip).toMatchObject({ packets: 1n, bytes: BigInt(input.length) });
  });

  it('restores ids and tables from the pinned maps after a restart, so flows keep their backends', () => {
    const spec: FrameSpec = {
      src: '198.51.100.90',
      dst: WEB4.address,
      protocol: 'tcp',
      sport: 40200,
      dport: 80,
    };
    const first = checkEncapsulated(frame(spec), run(frame(spec)).dataOut, spec);
    const ids = WEB4.backends.map((b) => lb.backendId(b.address));
    const table = Buffer.from(lb.table(WEB4.address, WEB4.port, WEB4.protocol)!.buffer);
    lb.close();
    const logged: string[] = [];
    lb = XdpLoadBalancer.load(bpf, OBJECT_DIR, CONFIG, {
      pinRoot: sandbox().bpffsDir,
      logger: { info: (_, message) => logged.push(message), warn: (_, message) => logged.push(message) },
    });
    expect(logged).toContain('xdp state restored from pinned maps');
    expect(WEB4.backends.map((b) => lb.backendId(b.address))).toEqual(ids);
    expect(Buffer.from(lb.table(WEB4.address, WEB4.port, WEB4.protocol)!.buffer).equals(table)).toBe(true);
    const ack = { ...spec, flags: TCP_ACK };
    const before = verdicts();
    expect(checkEncapsulated(frame(ack), run(frame(ack)).dataOut, ack)).toBe(first);
    expect(verdicts().tx_conn_hit).toBe(before.tx_conn_hit + 1n);
    // The same services again change nothing; a new backend gets a fresh id, not a restored one.
    for (const service of [WEB4, DNS4, WEB6, MIXED, EMPTY]) lb.setService(service);
    expect(Buffer.from(lb.table(WEB4.address, WEB4.port, WEB4.protocol)!.buffer).equals(table)).toBe(true);
    lb.setService({ ...WEB4, backends: [...WEB4.backends, { address: '10.1.0.99' }] });
    expect(ids).not.toContain(lb.backendId('10.1.0.99'));
    expect(lb.pruneBackends()).toBe(0);
  });

  it('deletes a service: its packets pass again and unused backends lose their slots', () => {
    const spec: FrameSpec = {
      src: '198.51.100.91',
      dst: DNS4.address,
      protocol: 'udp',
      sport: 5000,
      dport: 53,
    };
    expect(run(frame(spec)).retval).toBe(XdpAction.tx);
    expect(lb.deleteService(DNS4.address, DNS4.port, DNS4.protocol)).toBe(true);
    expect(lb.deleteService(DNS4.address, DNS4.port, DNS4.protocol)).toBe(false);
    expect(lb.backendId('10.1.0.21')).toBeUndefined();
    const result = run(frame(spec));
    expect(result.retval).toBe(XdpAction.pass);
    expect(result.dataOut).toEqual(frame(spec));
    // Its VIP slot is reused by the next service.
    lb.setService({ ...DNS4, port: 5353 });
    expect(run(frame({ ...spec, dport: 5353 })).retval).toBe(XdpAction.tx);
  });

  it("passes a deleted VIP's established flows while its port stays in use; a reused VIP id does not take them", () => {
    const spec: FrameSpec = {
      src: '198.51.100.92',
      dst: WEB4.address,
      protocol: 'tcp',
      sport: 42000,
      dport: 80,
      flags: TCP_ACK,
    };
    // A VIP in the same filter slot keeps the slot set after WEB4 is deleted, so the packet reaches
    // the connection table, whose entry for this flow is still there: the VIP-id check makes it pass.
    const twin: XdpServiceSpec = { ...WEB4, address: '10.97.0.11', backends: [{ address: '10.1.0.41' }] };
    expect(vipFilterSlot(ipToBytes16(twin.address), 80, 6)).toBe(
      vipFilterSlot(ipToBytes16(WEB4.address), 80, 6),
    );
    lb.setService(twin);
    expect(run(frame({ ...spec, flags: TCP_SYN })).retval).toBe(XdpAction.tx);
    let before = verdicts();
    expect(run(frame(spec)).retval).toBe(XdpAction.tx);
    expect(verdicts().tx_conn_hit - before.tx_conn_hit).toBe(1n);
    expect(lb.deleteService(WEB4.address, WEB4.port, WEB4.protocol)).toBe(true);
    const expectPassed = (): void => {
      before = verdicts();
      const result = run(frame(spec));
      expect(result.retval).toBe(XdpAction.pass);
      expect(result.dataOut).toEqual(frame(spec));
      expect(verdicts().pass_not_vip - before.pass_not_vip).toBe(1n);
    };
    expectPassed();
    // The next service takes the freed VIP id (another address, same port): the flow still passes.
    lb.setService({ ...WEB4, address: '10.96.0.40' });
    expect(run(frame({ ...spec, dst: '10.96.0.40', flags: TCP_SYN })).retval).toBe(XdpAction.tx);
    expectPassed();
    // The VIP back: its packets are balanced again.
    lb.setService(WEB4);
    expect(run(frame(spec)).retval).toBe(XdpAction.tx);
  });

  it('keeps the VIP filter in step with the VIPs', () => {
    const filter = (address: string, port: number, proto: number): number =>
      lb.object
        .map(XdpMaps.vipFilter)
        .lookup(u32Buffer(vipFilterSlot(ipToBytes16(address), port, proto)))![0]!;
    expect(filter('10.96.0.50', 8053, 17)).toBe(0);
    const other: FrameSpec = {
      src: '198.51.100.93',
      dst: '10.96.0.50',
      protocol: 'udp',
      sport: 7000,
      dport: 8053,
    };
    lb.setService({
      address: '10.96.0.50',
      port: 8053,
      protocol: 'udp',
      backends: [{ address: '10.1.0.21' }],
    });
    expect(filter('10.96.0.50', 8053, 17)).toBe(1);
    expect(run(frame(other)).retval).toBe(XdpAction.tx);
    // TCP on the same port was never a VIP.
    expect(run(frame({ ...other, protocol: 'tcp' })).retval).toBe(XdpAction.pass);
    lb.deleteService('10.96.0.50', 8053, 'udp');
    expect(filter('10.96.0.50', 8053, 17)).toBe(0);
    const before = verdicts();
    expect(run(frame(other)).retval).toBe(XdpAction.pass);
    expect(verdicts().pass_not_vip - before.pass_not_vip).toBe(1n);
    // Other VIPs on the same port keep working after one of them is gone.
    lb.deleteService(WEB4.address, WEB4.port, WEB4.protocol);
    expect(run(frame({ src: '198.51.100.94', dst: MIXED.address, protocol: 'tcp', dport: 80 })).retval).toBe(
      XdpAction.tx,
    );
  });

  it('removes the pin of the connection table earlier versions used', () => {
    lb.close();
    const pinRoot = join(sandbox().bpffsDir, 'upgrade');
    mkdirSync(pinRoot);
    const old = bpf.createMap({
      type: 'hash',
      name: 'xdp_conns_v1',
      keySize: 4,
      valueSize: 4,
      maxEntries: 1,
    });
    old.pin(join(pinRoot, 'sluice_xdp_conns_v1'));
    old.close();
    lb = XdpLoadBalancer.load(bpf, OBJECT_DIR, CONFIG, { pinRoot });
    expect(existsSync(join(pinRoot, 'sluice_xdp_conns_v1'))).toBe(false);
    expect(existsSync(join(pinRoot, XdpMaps.conns))).toBe(true);
  });

  it('hands testRun flags to the kernel: live frames, and CPU placement refused for XDP', () => {
    // A VIP without backends drops: live frames are then recycled at once, nothing is passed or sent.
    const data = frame({ src: '198.51.100.7', dst: EMPTY.address, protocol: 'tcp', dport: 80 });
    const program = lb.object.program(XDP_LB_PROGRAM);
    const before = verdicts().drop_no_backend;
    expect(program.testRun({ data, repeat: 50 }).retval).toBe(XdpAction.drop);
    // Live frames report no verdict (the kernel acted on it), yet every repetition ran and counted.
    const live = program.testRun({ data, repeat: 50, flags: TestRunFlags.xdpLiveFrames });
    expect(live.retval).toBe(0);
    expect(live.dataOut.length).toBe(0);
    expect(verdicts().drop_no_backend).toBe(before + 100n);
    expect(() => program.testRun({ data, cpu: 1, flags: TestRunFlags.runOnCpu })).toThrow(/EINVAL/);
  });

  it('sends to the gateway MAC when one is set, and refuses settings it cannot use', () => {
    const gw = XdpLoadBalancer.load(bpf, OBJECT_DIR, { ...CONFIG, gatewayMac: '02:aa:bb:cc:dd:ee' }, {});
    try {
      gw.setService(WEB4);
      const result = gw.object
        .program(XDP_LB_PROGRAM)
        .testRun({ data: frame({ src: '198.51.100.7', dst: WEB4.address, protocol: 'tcp' }) });
      expect(result.retval).toBe(XdpAction.tx);
      expect(parseFrame(result.dataOut).dstMac).toEqual(Buffer.from([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]));
    } finally {
      gw.close();
    }
    expect(() => XdpLoadBalancer.load(bpf, OBJECT_DIR, { ...CONFIG, maglevSize: 65_536 })).toThrow(
      /xdp.maglevSize: 65536 is not a prime/,
    );
    expect(() => XdpLoadBalancer.load(bpf, OBJECT_DIR, { ...CONFIG, gatewayMac: 'nope' })).toThrow(
      /xdp.gatewayMac/,
    );
    expect(() => lb.setService({ ...WEB4, port: 0 })).toThrow(/port: 0/);
    expect(() => lb.setService({ ...WEB4, backends: [{ address: 'x' }] })).toThrow(
      /backends\[0\]\.address: x/,
    );
  });
});

/** A flow of WEB4 whose new-flow choice is `backend`. */
function flowsOn(lb: XdpLoadBalancer, backend: string): FrameSpec {
  const table = lb.table(WEB4.address, WEB4.port, WEB4.protocol)!;
  const id = lb.backendId(backend);
  for (let port = 10000; port < 60000; port++) {
    const slot = maglevSlot(
      {
        source: '198.51.100.80',
        sourcePort: port,
        destination: WEB4.address,
        destinationPort: 80,
        protocol: 6,
      },
      SEED,
      lb.config.maglevSize,
    );
    if (table[slot] === id)
      return { src: '198.51.100.80', dst: WEB4.address, protocol: 'tcp', sport: port, dport: 80 };
  }
  throw new Error(`no flow lands on ${backend}`);
}

function expandV6(address: string): string {
  if (!address.includes(':')) return address;
  const [head = '', tail = ''] = address.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  return [...h, ...Array(8 - h.length - t.length).fill('0'), ...t].join(':');
}

function mangle(data: Buffer, offset: number, value: number): Buffer {
  const copy = Buffer.from(data);
  copy[offset] = value;
  return copy;
}

function totalLength(data: Buffer, length: number): Buffer {
  const copy = Buffer.from(data);
  copy.writeUInt16BE(length, 16);
  return copy;
}

/** IPv4 + 10 bytes of TCP, with the total length saying so: the TCP header does not fit in the frame. */
function shortTcp(): Buffer {
  const ip = ipPacket({ src: '198.51.100.7', dst: '10.96.0.10', protocol: 'tcp' }).subarray(0, 30);
  const copy = Buffer.from(ip);
  copy.writeUInt16BE(30, 2);
  return ethernet(0x0800, copy);
}

/** An IPv6 packet to the VIP whose next header is an extension header. */
function ipv6WithNextHeader(next: number): Buffer {
  const packet = Buffer.from(
    ipPacket({ src: '2001:db8::7', dst: 'fd00:96::10', protocol: 'tcp', dport: 443 }),
  );
  packet[6] = next;
  return ethernet(0x86dd, packet);
}
