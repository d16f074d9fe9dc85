/**
 * The XDP program's flow hash (bpf/lib/xdp_hash.h xdp_flow_hash_v4/v6), so userspace can tell which
 * Maglev slot — and so which backend — a flow lands on. Every node with the same seed computes the same.
 */
import { isIPv4 } from 'node:net';
import { ipToBytes16 } from '../abi/ip';
import { jhash2, jhash3words } from './jhash';

export interface FlowTuple {
  /** client address */
  readonly source: string;
  readonly sourcePort: number;
  /** VIP address */
  readonly destination: string;
  readonly destinationPort: number;
  /** IP protocol number (6 TCP, 17 UDP) */
  readonly protocol: number;
}

/** The 4 address bytes read as one little-endian word, as the program's 32-bit load does. */
const words = (addr: Buffer): number[] => [0, 4, 8, 12].map((i) => addr.readUInt32LE(i));

export function flowHash(flow: FlowTuple, seed: number): number {
  const src = ipToBytes16(flow.source);
  const dst = ipToBytes16(flow.destination);
  const portBytes = Buffer.alloc(4);
  portBytes.writeUInt16BE(flow.sourcePort, 0);
  portBytes.writeUInt16BE(flow.destinationPort, 2);
  const ports = portBytes.readUInt32LE(0);
  const initval = (seed + flow.protocol) >>> 0;
  if (isIPv4(flow.source)) {
    return jhash3words(src.readUInt32LE(12), dst.readUInt32LE(12), ports, initval);
  }
  return jhash3words(jhash2(words(src), seed >>> 0), jhash2(words(dst), seed >>> 0), ports, initval);
}

/** The Maglev slot a flow uses in a table of `size` entries. */
export function maglevSlot(flow: FlowTuple, seed: number, size: number): number {
  return flowHash(flow, seed) % size;
}
