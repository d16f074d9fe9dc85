/**
 * Codecs for the socket-LB ABI (bpf/include/lb.h). test/bpf/abi-btf.test.ts checks each against the BTF
 * of the built objects. Addresses are 16 bytes (IPv4 as v4-mapped, see ip.ts); ports are network order.
 */
import { array, be16, bytes, defineStruct, i64, u8, u16, u32, u64 } from './codec';

/** Slot key index bits (LB_SLOT_*): which half of the double-buffered table, and the member list. */
export const LB_SLOT_GEN_BIT = 0x8000_0000;
export const LB_SLOT_MEMBER_BIT = 0x4000_0000;
export const LB_SLOT_INDEX_MASK = 0x3fff_ffff;

/** lb_service.algorithm (LB_ALG_*). */
export const LbAlgorithm = {
  random: 0,
  weighted: 1,
  'round-robin': 2,
  'least-connections': 3,
} as const;
export type LbAlgorithmName = keyof typeof LbAlgorithm;

/** lb_service.flags (LB_SVC_F_*). */
export const LB_SVC_F_AFFINITY = 0x01;
export const LB_SVC_F_NODE_LOCAL = 0x02;
/** The slots are the member list (one slot per member, in order): no separate member entries. */
export const LB_SVC_F_MEMBERS_ARE_SLOTS = 0x04;
/** The live slots are in the record itself (inline_slots): connect() reads nothing else to choose. */
export const LB_SVC_F_INLINE = 0x08;
/** Slots a service record carries (LB_INLINE_BACKENDS): unweighted services of up to this many. */
export const LB_INLINE_BACKENDS = 4;

/** Whether a service record carries its live slots inline: its members are its slots, and few. */
export function carriesInlineSlots(membersAreSlots: boolean, slotCount: number): boolean {
  return membersAreSlots && slotCount > 0 && slotCount <= LB_INLINE_BACKENDS;
}

/** lb_backend.state (LB_BACKEND_*). */
export const LB_BACKEND_ACTIVE = 1;
export const LB_BACKEND_DRAINING = 2;

/** lb_backend.flags (LB_BACKEND_F_*). */
export const LB_BACKEND_F_LOCAL = 0x01;

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export const ServiceKeyCodec = defineStruct('lb_service_key', [
  ['addr', bytes(16)],
  ['port', be16],
  ['proto', u8],
  ['pad', u8],
]);

export const InlineBackendCodec = defineStruct('lb_inline_backend', [
  ['addr', bytes(16)],
  ['port', be16],
  ['pad', u16],
  ['id', u32],
]);

export const ServiceCodec = defineStruct('lb_service', [
  ['id', u32],
  ['algorithm', u8],
  ['flags', u8],
  ['generation', u8],
  ['max_eject_pct', u8],
  ['slot_count', u16],
  ['backend_count', u16],
  ['affinity_timeout_s', u32],
  ['eject_threshold', u16],
  ['pad', u16],
  ['eject_base_ms', u32],
  ['eject_max_ms', u32],
  ['inline_slots', array(InlineBackendCodec, LB_INLINE_BACKENDS)],
]);

export const BackendCodec = defineStruct('lb_backend', [
  ['addr', bytes(16)],
  ['port', be16],
  ['weight', u16],
  ['state', u8],
  ['flags', u8],
  ['pad', u16],
  ['service_id', u32],
]);

export const SlotKeyCodec = defineStruct('lb_slot_key', [
  ['service_id', u32],
  ['index', u32],
]);

export const BackendStateCodec = defineStruct('lb_backend_state', [
  ['ejected_until_ns', u64],
  ['active', i64],
  ['consecutive_fails', u32],
  ['consecutive_ejects', u32],
  ['service_id', u32],
  ['pad', u32],
  ['connects', u64],
  ['closed', u64],
]);

export const BackendStatsCodec = defineStruct('lb_backend_stats', [
  ['connect_failures', u64],
  ['ejections', u64],
]);

export const ServiceStatsCodec = defineStruct('lb_service_stats', [
  ['connect_failures', u64],
  ['no_backend', u64],
  ['ejections', u64],
  ['rr_cursor', u64],
]);

export const SockCodec = defineStruct('lb_sock', [
  ['addr', bytes(16)],
  ['port', be16],
  ['proto', u8],
  ['flags', u8],
  ['service_id', u32],
  ['backend_id', u32],
]);

/** A socket-table entry: the owner's cookie (0 = free) and its record. */
export const SockSlotCodec = defineStruct('lb_sock_slot', [
  ['cookie', u64],
  ['sock', SockCodec],
]);

/** Entries of the socket table (LB_SOCK_TABLE_SIZE in bpf/include/lb.h; fixed, not a setting). */
export const LB_SOCK_TABLE_SIZE = 131_072;

export const AffinityKeyCodec = defineStruct('lb_affinity_key', [
  ['netns_cookie', u64],
  ['service_id', u32],
  ['pad', u32],
]);

export const AffinityCodec = defineStruct('lb_affinity', [
  ['last_used_ns', u64],
  ['backend_id', u32],
  ['pad', u32],
]);

export const RevnatKeyCodec = defineStruct('lb_revnat_key', [
  ['cookie', u64],
  ['addr', bytes(16)],
  ['port', be16],
  ['pad', bytes(6)],
]);

export const RevnatCodec = defineStruct('lb_revnat', [
  ['addr', bytes(16)],
  ['port', be16],
  ['pad', u16],
]);

/** Pinned map names (bpf/lib/lb_maps.h). */
export const LbMaps = {
  services: 'sluice_lb_services_v2',
  backends: 'sluice_lb_backends_v1',
  slots: 'sluice_lb_slots_v1',
  backendState: 'sluice_lb_backend_state_v2',
  backendStats: 'sluice_lb_backend_stats_v2',
  serviceStats: 'sluice_lb_service_stats_v2',
  sockTable: 'sluice_lb_sock_table_v1',
  sock: 'sluice_lb_sock_v1',
  affinity: 'sluice_lb_affinity_v1',
  udpRevnat: 'sluice_lb_udp_revnat_v1',
} as const;

/**
 * Pins of earlier layouts. A starting agent copies what they hold into their successors before its
 * programs replace the old ones (agent/datapath/migrate.ts), then removes them.
 */
export const LbRetiredMaps = {
  /** lb_service without inline_slots, preallocated */
  servicesV1: 'sluice_lb_services_v1',
  /** lb_backend_state without service_id, connects, closed */
  backendStateV1: 'sluice_lb_backend_state_v1',
  /** per-CPU {connects, connect_failures, ejections, closed} */
  backendStatsV1: 'sluice_lb_backend_stats_v1',
  /** per-CPU {connects, connect_failures, no_backend, ejections, rr_cursor} */
  serviceStatsV1: 'sluice_lb_service_stats_v1',
} as const;

/**
 * Whether a slot-map index (of the service's own id) is an entry of the service's live member list:
 * the member region of the live half, or the live slots themselves when the record carries
 * LB_SVC_F_MEMBERS_ARE_SLOTS (unweighted tables are written once).
 */
export function isLiveMemberEntry(service: { generation: number; flags: number }, index: number): boolean {
  const liveHalf = ((index & LB_SLOT_GEN_BIT) !== 0 ? 1 : 0) === (service.generation ? 1 : 0);
  if (!liveHalf) return false;
  const member = (index & LB_SLOT_MEMBER_BIT) !== 0;
  return (service.flags & LB_SVC_F_MEMBERS_ARE_SLOTS) !== 0 ? !member : member;
}
