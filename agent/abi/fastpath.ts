/**
 * Codecs for bpf/include/fastpath.h (the same-node fast path, bpf/fastpath.bpf.c). Addresses are 16 bytes,
 * IPv4 v4-mapped (agent/abi/ip.ts); ports are host order.
 */
import { bytes, defineStruct, u16, u32, u64 } from './codec';

/** fp_config.scope */
export const FP_SCOPE_MESH = 0;
export const FP_SCOPE_ALL = 1;

/** Sockhash key: one established socket from its own side. */
export const FpSockKeyCodec = defineStruct('fp_sock_key', [
  ['netns', u64],
  ['local_ip', bytes(16)],
  ['remote_ip', bytes(16)],
  ['local_port', u16],
  ['remote_port', u16],
  ['pad', u32],
]);

/** A node-local mesh endpoint whose connections may take the fast path. */
export const FpEndpointKeyCodec = defineStruct('fp_endpoint_key', [
  ['ip', bytes(16)],
  ['port', u16],
  ['pad', u16],
]);

/** A non-blocking listener (kept by the sock_ops program). */
export const FpListenerKeyCodec = defineStruct('fp_listener_key', [
  ['netns', u64],
  ['ip', bytes(16)],
  ['port', u16],
  ['pad', u16],
  ['pad2', u32],
]);

/** Run-time settings (array map, one entry). */
export const FpConfigCodec = defineStruct('fp_config', [
  ['enabled', u32],
  ['scope', u32],
  ['max_queued_bytes', u32],
  ['max_msg_bytes', u32],
  ['allow_blocking', u32],
  ['max_streak_msgs', u32],
  ['max_streak_bytes', u32],
  ['streak_exempt_bytes', u32],
]);

/** Per-CPU counters (one entry). */
export const FpStatsCodec = defineStruct('fp_stats', [
  ['inserts', u64],
  ['insert_failures', u64],
  ['redirected_msgs', u64],
  ['redirected_bytes', u64],
  ['fallback_msgs', u64],
  ['fallback_bytes', u64],
  ['fallback_no_peer', u64],
  ['fallback_backpressure', u64],
  ['fallback_disabled', u64],
  ['fallback_policy', u64],
  ['redirect_errors', u64],
  ['state_failures', u64],
  ['skipped_blocking', u64],
  ['fallback_blocking', u64],
  ['fallback_streaming', u64],
  ['left_map', u64],
]);

/** Per connection (by its canonical key): each side's socket and state addresses, and the redirect claims. */
export const FpConnCodec = defineStruct('fp_conn', [
  ['sk0', u64],
  ['state0', u64],
  ['sk1', u64],
  ['state1', u64],
  ['redir0', u64],
  ['redir1', u64],
]);

/** Per-socket state (socket local storage): mode, the peer it sends to, streak and backpressure bookkeeping. */
export const FpSockStateCodec = defineStruct('fp_sock_state', [
  ['mode', u32],
  ['flags', u32],
  ['peer', bytes(48)],
  ['peer_sk', u64],
  ['peer_state', u64],
  ['sends', u64],
  ['peer_sends_mark', u64],
  ['streak_bytes', u64],
  ['unread_bound', u64],
  ['streak_msgs', u32],
  ['pad', u32],
]);
