// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only programs for the native addon's socket hooks: a connect4 rewrite driven by a map, a
 * trivial program for every other sock_addr hook, a sock_ops program that counts callbacks and puts
 * established sockets into a sockhash, and an sk_msg verdict program that counts messages there.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Counter slots in addon_counts: sock_ops callbacks use their op number (below 32). */
#define CNT_CONNECT4_REWRITE 32
#define CNT_SKMSG_MSGS	     33
#define CNT_SKMSG_BYTES	     34
#define CNT_SOCKHASH_ADDED   35
#define CNT_SOCK_ADDR_BASE   40

struct addon_addr4 {
	__u32 addr; /* IPv4 address, network order */
	__u16 port; /* port, network order */
	__u16 pad;
};

struct addon_sockkey {
	__u32 local_ip4;   /* network order */
	__u32 remote_ip4;  /* network order */
	__u32 local_port;  /* host order */
	__u32 remote_port; /* as sock_ops reports it */
};

/* connect4 rewrites: virtual address -> real address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct addon_addr4);
	__type(value, struct addon_addr4);
} addon_rewrites SEC(".maps");

/* Event counters, slot numbers above. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} addon_counts SEC(".maps");

/* Established TCP sockets of the test cgroup, for the sk_msg program. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 64);
	__type(key, struct addon_sockkey);
	__type(value, __u32);
} addon_socks SEC(".maps");

static __always_inline void bump(__u32 slot, __u64 by)
{
	__u64 *count = bpf_map_lookup_elem(&addon_counts, &slot);

	if (count)
		__sync_fetch_and_add(count, by);
}

SEC("cgroup/connect4")
int addon_connect4(struct bpf_sock_addr *ctx)
{
	struct addon_addr4 key = {};
	struct addon_addr4 *to;

	key.addr = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;
	to = bpf_map_lookup_elem(&addon_rewrites, &key);
	if (to) {
		ctx->user_ip4 = to->addr;
		ctx->user_port = to->port;
		bump(CNT_CONNECT4_REWRITE, 1);
	}
	return 1;
}

#define COUNTING_HOOK(name, section, slot)                                                         \
	SEC(section)                                                                               \
	int name(struct bpf_sock_addr *ctx)                                                        \
	{                                                                                          \
		bump(CNT_SOCK_ADDR_BASE + (slot), 1);                                              \
		return 1;                                                                          \
	}

COUNTING_HOOK(addon_connect6, "cgroup/connect6", 0)
COUNTING_HOOK(addon_sendmsg4, "cgroup/sendmsg4", 1)
COUNTING_HOOK(addon_sendmsg6, "cgroup/sendmsg6", 2)
COUNTING_HOOK(addon_recvmsg4, "cgroup/recvmsg4", 3)
COUNTING_HOOK(addon_recvmsg6, "cgroup/recvmsg6", 4)
COUNTING_HOOK(addon_getpeername4, "cgroup/getpeername4", 5)
COUNTING_HOOK(addon_getpeername6, "cgroup/getpeername6", 6)

SEC("sockops")
int addon_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	struct addon_sockkey key = {};

	bump(op & 31, 1);
	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != 2 /* AF_INET */)
		return 1;
	key.local_ip4 = skops->local_ip4;
	key.remote_ip4 = skops->remote_ip4;
	key.local_port = skops->local_port;
	key.remote_port = skops->remote_port;
	if (bpf_sock_hash_update(skops, &addon_socks, &key, BPF_NOEXIST) == 0)
		bump(CNT_SOCKHASH_ADDED, 1);
	return 1;
}

SEC("sk_msg")
int addon_skmsg(struct sk_msg_md *msg)
{
	bump(CNT_SKMSG_MSGS, 1);
	bump(CNT_SKMSG_BYTES, msg->size);
	return SK_PASS;
}
