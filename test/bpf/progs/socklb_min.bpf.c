// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark-only: the minimal connect4 socket-LB of issue 3's prototype (one hash lookup from
 * {VIP, port} to up to four backends, a random pick, the address rewritten; nothing else), so
 * bench/socket-lb.ts can show, in the same run and by the same method, what the mechanism itself
 * costs next to sluice's hooks. No per-socket record (getpeername shows the backend), no weights,
 * no ejection, no counters: never attach it outside a benchmark sandbox.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct min_key {
	__u32 vip;  /* network order */
	__u16 port; /* network order */
	__u16 pad;
};

struct min_service {
	__u32 addr[4]; /* backends, network order */
	__u16 port;    /* backend port, network order */
	__u16 count;   /* 1..4 */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct min_key);
	__type(value, struct min_service);
} lb_min_services SEC(".maps");

SEC("cgroup/connect4")
int lb_min_connect4(struct bpf_sock_addr *ctx)
{
	struct min_key key = {.vip = ctx->user_ip4, .port = (__u16)ctx->user_port};
	struct min_service *svc;

	if (ctx->protocol != IPPROTO_TCP)
		return 1;
	svc = bpf_map_lookup_elem(&lb_min_services, &key);
	if (!svc || !svc->count || svc->count > 4)
		return 1;
	ctx->user_ip4 = svc->addr[(bpf_get_prandom_u32() % svc->count) & 3];
	ctx->user_port = svc->port;
	return 1;
}

/*
 * The prototype's companion for the cost of the mechanism the issue prescribes beside it: a
 * sock_ops program on the cgroup (sluice's ejection and active counts live there) that does
 * nothing, so every TCP socket pays only the program runs themselves.
 */
SEC("sockops")
int lb_min_sockops(struct bpf_sock_ops *skops)
{
	return 1;
}
