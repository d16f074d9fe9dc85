// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark-only: the minimal same-node redirect of issue 4 (sockhash + bpf_msg_redirect_hash with
 * BPF_F_INGRESS, nothing else), so bench/fastpath.ts can show the ceiling the real fast path
 * (bpf/fastpath.bpf.c) is measured against in the same run. No backpressure bound, no ordering
 * state, no blocking-socket rule: never attach it outside a benchmark sandbox.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "fastpath.h"
#include "fastpath_key.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Established sockets of the benchmark cgroup by their own 4-tuple (same key as the fast path). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct fp_sock_key);
	__type(value, __u64);
} fp_min_socks SEC(".maps");

SEC("sockops")
int fp_min_sockops(struct bpf_sock_ops *ops)
{
	struct fp_sock_key key = {};

	if (ops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    ops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (fp_key_from_ops(ops, &key))
		return 1;
	fp_key_set_netns(&key, bpf_get_netns_cookie(ops));
	bpf_sock_hash_update(ops, &fp_min_socks, &key, BPF_NOEXIST);
	return 1;
}

SEC("sk_msg")
int fp_min_msg(struct sk_msg_md *msg)
{
	struct fp_sock_key key = {};

	if (fp_peer_key_from_msg(msg, &key))
		return SK_PASS;
	fp_key_set_netns(&key, bpf_get_netns_cookie(msg));
	/* Peer not in the map: the helper sets no redirect and the send takes the normal path. */
	bpf_msg_redirect_hash(msg, &fp_min_socks, &key, BPF_F_INGRESS);
	return SK_PASS;
}
