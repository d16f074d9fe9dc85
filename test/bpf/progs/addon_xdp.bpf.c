// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only XDP programs and maps for the native addon: a packet counter whose verdict is a
 * const volatile global, a MAC swapper for BPF_PROG_TEST_RUN, and maps of each shape the map tests
 * need (a resizable hash, a tiny hash to fill up, a per-CPU array and a map pinned by name).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The verdict of addon_xdp_count, set by the loader. */
const volatile __u32 xdp_verdict = XDP_PASS;
/* Added to every counter bump, set by the loader (proves globals reach the program). */
const volatile __u64 count_step = 1;

/* Packets seen by addon_xdp_count: 0 all, 1 IPv4, 2 ARP, 3 other. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} addon_xdp_counts SEC(".maps");

/* A hash whose capacity the loader overrides (batch tests). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} addon_big SEC(".maps");

/* A hash that is full after four entries. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} addon_small SEC(".maps");

/* Pinned by name under the loader's pin root, so a second load reuses it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} addon_pinned SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *value = bpf_map_lookup_elem(&addon_xdp_counts, &slot);

	if (value)
		*value += count_step;
}

SEC("xdp")
int addon_xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	count(0);
	if ((void *)(eth + 1) > data_end)
		return xdp_verdict;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		count(1);
	else if (eth->h_proto == bpf_htons(ETH_P_ARP))
		count(2);
	else
		count(3);
	return xdp_verdict;
}

SEC("xdp")
int addon_xdp_swap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	unsigned char tmp[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return XDP_TX;
}
