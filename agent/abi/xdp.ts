/**
 * Codecs for the XDP load balancer's maps (bpf/include/xdp_lb.h), its settings (const volatile globals
 * in bpf/xdp_lb.bpf.c) and its verdict reasons.
 */
import { be16, bytes, defineStruct, u8, u32, u64 } from './codec';

export const XDP_LB_OBJECT = 'xdp_lb.bpf.o';
export const XDP_LB_PROGRAM = 'xdp_lb';
/** Benchmark harness: xdp_lb, then the encapsulation undone (test runs only). */
export const XDP_LB_BENCH_PROGRAM = 'xdp_lb_bench';
/** Benchmark harness: like xdp_lb_bench, each repetition a new flow (client address bumped). */
export const XDP_LB_BENCH_NEW_PROGRAM = 'xdp_lb_bench_new';
export const XDP_DECAP_PROGRAM = 'xdp_decap_tunnel';
export const XDP_PASS_PROGRAM = 'xdp_pass';

/** Map names as declared (and pinned) in bpf/xdp_lb.bpf.c. */
export const XdpMaps = {
  vips: 'sluice_xdp_vips_v1',
  backends: 'sluice_xdp_backends_v1',
  maglev: 'sluice_xdp_maglev_v1',
  /** the connection table: sets of XDP_LB_CONN_WAYS flows in an array (bpf/lib/xdp_conntab.h) */
  conns: 'sluice_xdp_conns_v2',
  vipStats: 'sluice_xdp_vip_stats_v1',
  backendStats: 'sluice_xdp_backend_stats_v1',
  verdicts: 'sluice_xdp_verdicts_v1',
  /** VIP id → its xdp_vip_key (zeros when free): checked on every connection-table hit */
  vipKeys: 'sluice_xdp_vip_keys_v1',
  /** VIP filter slot (vipFilterSlot) → 1 when some VIP maps there */
  vipFilter: 'sluice_xdp_vip_filter_v1',
} as const;

/**
 * Maps earlier versions pinned that no program uses any more: the connection table before it became
 * sets (an LRU_HASH). A load with the same pin directory removes their names.
 */
export const XDP_LB_RETIRED_MAPS = ['sluice_xdp_conns_v1'] as const;

/** Slots of sluice_xdp_vip_filter_v1 (XDP_LB_VIP_FILTER_SLOTS, a power of two). */
export const XDP_LB_VIP_FILTER_SLOTS = 65_536;

/**
 * The VIP filter slot of a destination, as xdp_vip_filter_slot computes it: the last 4 bytes of the
 * 16-byte address (big-endian) folded to 16 bits, mixed with the port and protocol.
 */
export function vipFilterSlot(addr16: Buffer, port: number, proto: number): number {
  const addr = addr16.readUInt32BE(12);
  return ((addr ^ (addr >>> 16) ^ port ^ (proto << 8)) & (XDP_LB_VIP_FILTER_SLOTS - 1)) >>> 0;
}

/** Flows per set of the connection table (XDP_CONN_WAYS in bpf/lib/xdp_conntab.h). */
export const XDP_LB_CONN_WAYS = 16;

/**
 * Sets of the connection table for `maxConns` flows: enough for maxConns, a power of two (the program
 * masks its hash), at least one.
 */
export function xdpConnSets(maxConns: number): number {
  let sets = 1;
  while (sets * XDP_LB_CONN_WAYS < maxConns) sets *= 2;
  return sets;
}

/** Default capacities from bpf/include/xdp_lb.h. */
export const XDP_LB_DEFAULTS = {
  maglevSize: 65_537,
  maxVips: 16_384,
  maxBackends: 4096,
  maxRings: 16,
  maxConns: 131_072,
} as const;

export const XDP_LB_NO_BACKEND = 0;
export const XDP_LB_AF_INET = 2;
export const XDP_LB_AF_INET6 = 10;

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** enum xdp_lb_reason, index into sluice_xdp_verdicts_v1, with the verdict each reason returns. */
export const XdpReasons = [
  { id: 0, name: 'pass_not_ip', verdict: 'pass' },
  { id: 1, name: 'pass_truncated', verdict: 'pass' },
  { id: 2, name: 'pass_malformed', verdict: 'pass' },
  { id: 3, name: 'pass_fragment', verdict: 'pass' },
  { id: 4, name: 'pass_not_tcp_udp', verdict: 'pass' },
  { id: 5, name: 'pass_not_vip', verdict: 'pass' },
  { id: 6, name: 'tx_new_flow', verdict: 'tx' },
  { id: 7, name: 'tx_conn_hit', verdict: 'tx' },
  { id: 8, name: 'drop_no_backend', verdict: 'drop' },
  { id: 9, name: 'drop_encap', verdict: 'drop' },
] as const;

export type XdpReasonName = (typeof XdpReasons)[number]['name'];

/** XDP action numbers (enum xdp_action). */
export const XdpAction = { aborted: 0, drop: 1, pass: 2, tx: 3, redirect: 4 } as const;

export const XdpVipKeyCodec = defineStruct('xdp_vip_key', [
  ['addr', bytes(16)],
  ['port', be16],
  ['proto', u8],
  ['pad', u8],
]);

export const XdpVipCodec = defineStruct('xdp_vip', [
  ['vip_id', u32],
  ['ring_id', u32],
]);

export const XdpBackendCodec = defineStruct('xdp_backend', [
  ['addr', bytes(16)],
  ['family', u8],
  ['pad', bytes(3)],
]);

export const XdpFlowKeyCodec = defineStruct('xdp_flow_key', [
  ['saddr', bytes(16)],
  ['daddr', bytes(16)],
  ['sport', be16],
  ['dport', be16],
  ['proto', u8],
  ['pad', bytes(3)],
]);

export const XdpConnCodec = defineStruct('xdp_conn', [
  ['backend_id', u32],
  ['vip_id', u32],
]);

export const XdpCounterCodec = defineStruct('xdp_counter', [
  ['packets', u64],
  ['bytes', u64],
]);

/** A u32 map key or array value (little-endian, as the kernel stores __u32). */
export function u32Buffer(value: number): Buffer {
  const buf = Buffer.alloc(4);
  buf.writeUInt32LE(value >>> 0);
  return buf;
}
