/**
 * Packet builders and parsers for XDP test runs: Ethernet (optionally one VLAN tag), IPv4/IPv6, TCP, UDP
 * and ICMP with correct checksums, and a decoder for what the load balancer sends out (outer IP
 * header, inner packet) that recomputes every checksum so tests can check them.
 */
import { isIPv4 } from 'node:net';
import { ipToBytes16, ipv4ToBytes } from '../../agent/abi/ip';

export const CLIENT_MAC = Buffer.from([0x02, 0, 0, 0, 0, 0x01]);
export const NODE_MAC = Buffer.from([0x02, 0, 0, 0, 0, 0x02]);

export interface FrameSpec {
  src: string;
  dst: string;
  protocol: 'tcp' | 'udp' | 'icmp';
  sport?: number;
  dport?: number;
  /** TCP flags byte (default SYN) */
  flags?: number;
  payload?: Buffer;
  vlan?: number;
  tos?: number;
  /** IPv4 fragment field (flags + offset), e.g. 0x2000 for "more fragments" */
  fragment?: number;
  srcMac?: Buffer;
  dstMac?: Buffer;
}

export const TCP_SYN = 0x02;
export const TCP_ACK = 0x10;
export const TCP_PSH = 0x08;

/** The Internet checksum (RFC 1071) of buffers laid end to end. */
export function inetChecksum(...parts: Buffer[]): number {
  const data = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2) sum += data[data.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function pseudoHeader(src: Buffer, dst: Buffer, protocol: number, length: number): Buffer {
  if (src.length === 4) {
    const ph = Buffer.alloc(12);
    src.copy(ph, 0);
    dst.copy(ph, 4);
    ph[9] = protocol;
    ph.writeUInt16BE(length, 10);
    return ph;
  }
  const ph = Buffer.alloc(40);
  src.copy(ph, 0);
  dst.copy(ph, 16);
  ph.writeUInt32BE(length, 32);
  ph[39] = protocol;
  return ph;
}

const PROTO = { tcp: 6, udp: 17, icmp: 1 } as const;

function l4(spec: FrameSpec, src: Buffer, dst: Buffer): { bytes: Buffer; proto: number } {
  const payload = spec.payload ?? Buffer.alloc(0);
  if (spec.protocol === 'tcp') {
    const tcp = Buffer.alloc(20);
    tcp.writeUInt16BE(spec.sport ?? 40000, 0);
    tcp.writeUInt16BE(spec.dport ?? 80, 2);
    tcp.writeUInt32BE(1000, 4);
    tcp.writeUInt32BE((spec.flags ?? TCP_SYN) & TCP_ACK ? 2000 : 0, 8);
    tcp[12] = 5 << 4;
    tcp[13] = spec.flags ?? TCP_SYN;
    tcp.writeUInt16BE(65535, 14);
    const seg = Buffer.concat([tcp, payload]);
    seg.writeUInt16BE(inetChecksum(pseudoHeader(src, dst, 6, seg.length), seg), 16);
    return { bytes: seg, proto: 6 };
  }
  if (spec.protocol === 'udp') {
    const udp = Buffer.alloc(8);
    udp.writeUInt16BE(spec.sport ?? 40000, 0);
    udp.writeUInt16BE(spec.dport ?? 53, 2);
    udp.writeUInt16BE(8 + payload.length, 4);
    const seg = Buffer.concat([udp, payload]);
    seg.writeUInt16BE(inetChecksum(pseudoHeader(src, dst, 17, seg.length), seg) || 0xffff, 6);
    return { bytes: seg, proto: 17 };
  }
  const v6 = src.length === 16;
  const icmp = Buffer.concat([Buffer.from([v6 ? 128 : 8, 0, 0, 0, 0, 1, 0, 1]), payload]);
  const sum = v6 ? inetChecksum(pseudoHeader(src, dst, 58, icmp.length), icmp) : inetChecksum(icmp);
  icmp.writeUInt16BE(sum, 2);
  return { bytes: icmp, proto: v6 ? 58 : PROTO.icmp };
}

/** An IPv4 or IPv6 packet (no L2). */
export function ipPacket(spec: FrameSpec): Buffer {
  if (isIPv4(spec.src)) {
    const src = ipv4ToBytes(spec.src);
    const dst = ipv4ToBytes(spec.dst);
    const { bytes, proto } = l4(spec, src, dst);
    const ip = Buffer.alloc(20);
    ip[0] = 0x45;
    ip[1] = spec.tos ?? 0;
    ip.writeUInt16BE(20 + bytes.length, 2);
    ip.writeUInt16BE(0x1234, 4);
    ip.writeUInt16BE(spec.fragment ?? 0x4000, 6);
    ip[8] = 64;
    ip[9] = proto;
    src.copy(ip, 12);
    dst.copy(ip, 16);
    ip.writeUInt16BE(inetChecksum(ip), 10);
    return Buffer.concat([ip, bytes]);
  }
  const src = ipToBytes16(spec.src);
  const dst = ipToBytes16(spec.dst);
  const { bytes, proto } = l4(spec, src, dst);
  const ip = Buffer.alloc(40);
  const tc = spec.tos ?? 0;
  ip.writeUInt32BE(((6 << 28) | (tc << 20)) >>> 0, 0);
  ip.writeUInt16BE(bytes.length, 4);
  ip[6] = proto;
  ip[7] = 64;
  src.copy(ip, 8);
  dst.copy(ip, 24);
  return Buffer.concat([ip, bytes]);
}

export function ethernet(
  ethertype: number,
  payload: Buffer,
  opts: { vlan?: number; srcMac?: Buffer; dstMac?: Buffer } = {},
): Buffer {
  const header = Buffer.alloc(opts.vlan === undefined ? 14 : 18);
  (opts.dstMac ?? NODE_MAC).copy(header, 0);
  (opts.srcMac ?? CLIENT_MAC).copy(header, 6);
  if (opts.vlan === undefined) {
    header.writeUInt16BE(ethertype, 12);
  } else {
    header.writeUInt16BE(0x8100, 12);
    header.writeUInt16BE(opts.vlan, 14);
    header.writeUInt16BE(ethertype, 16);
  }
  return Buffer.concat([header, payload]);
}

/** A full frame. */
export function frame(spec: FrameSpec): Buffer {
  return ethernet(isIPv4(spec.src) ? 0x0800 : 0x86dd, ipPacket(spec), spec);
}

export interface ParsedIp {
  version: 4 | 6;
  src: string;
  dst: string;
  protocol: number;
  tos: number;
  ttl: number;
  /** total length (v4) or 40 + payload length (v6) as declared */
  length: number;
  headerLength: number;
  /** v4 only: the header checksum verifies */
  headerChecksumOk: boolean;
  payload: Buffer;
  raw: Buffer;
}

const v4Text = (b: Buffer): string => [...b].join('.');
const v6Text = (b: Buffer): string => {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return groups.join(':');
};

export function parseIp(packet: Buffer): ParsedIp {
  const version = packet[0]! >> 4;
  if (version === 4) {
    const ihl = (packet[0]! & 0xf) * 4;
    const length = packet.readUInt16BE(2);
    return {
      version: 4,
      src: v4Text(packet.subarray(12, 16)),
      dst: v4Text(packet.subarray(16, 20)),
      protocol: packet[9]!,
      tos: packet[1]!,
      ttl: packet[8]!,
      length,
      headerLength: ihl,
      headerChecksumOk: inetChecksum(packet.subarray(0, ihl)) === 0,
      payload: packet.subarray(ihl, length),
      raw: packet.subarray(0, length),
    };
  }
  if (version === 6) {
    const length = 40 + packet.readUInt16BE(4);
    return {
      version: 6,
      src: v6Text(packet.subarray(8, 24)),
      dst: v6Text(packet.subarray(24, 40)),
      protocol: packet[6]!,
      tos: (packet.readUInt16BE(0) >> 4) & 0xff,
      ttl: packet[7]!,
      length,
      headerLength: 40,
      headerChecksumOk: true,
      payload: packet.subarray(40, length),
      raw: packet.subarray(0, length),
    };
  }
  throw new Error(`not an IP packet (version ${version})`);
}

/** Whether the TCP/UDP/ICMPv6 checksum of a parsed packet verifies. */
export function l4ChecksumOk(ip: ParsedIp): boolean {
  const src = ipToBytes16(ip.src);
  const dst = ipToBytes16(ip.dst);
  const [s, d] = ip.version === 4 ? [src.subarray(12), dst.subarray(12)] : [src, dst];
  return inetChecksum(pseudoHeader(s, d, ip.protocol, ip.payload.length), ip.payload) === 0;
}

export interface ParsedFrame {
  dstMac: Buffer;
  srcMac: Buffer;
  vlan?: number;
  ethertype: number;
  ip: ParsedIp;
}

export function parseFrame(data: Buffer): ParsedFrame {
  let offset = 12;
  let ethertype = data.readUInt16BE(offset);
  let vlan: number | undefined;
  if (ethertype === 0x8100 || ethertype === 0x88a8) {
    vlan = data.readUInt16BE(14);
    ethertype = data.readUInt16BE(16);
    offset = 16;
  }
  return {
    dstMac: data.subarray(0, 6),
    srcMac: data.subarray(6, 12),
    vlan,
    ethertype,
    ip: parseIp(data.subarray(offset + 2)),
  };
}
