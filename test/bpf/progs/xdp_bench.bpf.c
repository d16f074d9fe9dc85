// SPDX-License-Identifier: Apache-2.0
/*
 * Benchmark-only XDP programs (bench/xdp.ts; never attached): floors and references measured in the
 * same run as the load balancer, so its costs can be read against what the kernel itself charges.
 *
 * - bench_push_pop: the encapsulation's helper work alone, a push of an outer IPv4 header and the
 * pop that undoes it, both the same bpf_xdp_adjust_head call and 14-byte Ethernet copy (by sign).
 * - bench_ref_hash / bench_ref_array: the reference, a minimal hash-lookup-and-rewrite
 * (parse Ethernet/IPv4/ports, look the 5-tuple up, rewrite the destination address and MACs with an
 *   incremental checksum, XDP_TX) — with a kernel hash map and with a direct-mapped array.
 * - bench_insert_*: one bpf_map_update_elem of a never-seen 40-byte flow key (xdp_flow_key) into
 * each connection-table map type the issue names, sized by the loader: the floor of a new flow's
 * insert.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xdp_lb.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Ports and addresses of a reference flow, as the rewrite table's key. */
struct ref_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 proto;
};

struct ref_value {
	__be32 daddr; /* new destination */
	__u8 mac[6];  /* next hop */
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ref_key);
	__type(value, struct ref_value);
} bench_ref_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct ref_value);
} bench_ref_slots SEC(".maps");

#define BENCH_CONNS (1 << 20)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, BENCH_CONNS);
	__type(key, struct xdp_flow_key);
	__type(value, struct xdp_conn);
} bench_lru_percpu_lists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BENCH_CONNS);
	__type(key, struct xdp_flow_key);
	__type(value, struct xdp_conn);
} bench_lru_common SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, BENCH_CONNS);
	__type(key, struct xdp_flow_key);
	__type(value, struct xdp_conn);
} bench_lru_percpu_hash SEC(".maps");

/* Katran's layout: one LRU per CPU in an array of maps, chosen by the CPU id. */
struct bench_cpu_lru {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BENCH_CONNS / 2);
	__type(key, struct xdp_flow_key);
	__type(value, struct xdp_conn);
};

struct bench_cpu_lru bench_lru_cpu0 SEC(".maps");
struct bench_cpu_lru bench_lru_cpu1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct bench_cpu_lru);
} bench_lru_per_cpu_maps SEC(".maps") = {
    .values = {&bench_lru_cpu0, &bench_lru_cpu1},
};

/* Next client address of the insert floors: every repetition a key never seen before. */
__u32 bench_next_client = 0;

static __always_inline int bench_l4(void *data, void *data_end, struct iphdr **ip, __be16 **ports)
{
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	__be16 *p = (void *)(iph + 1);

	if ((void *)(p + 2) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || iph->ihl != 5)
		return -1;
	*ip = iph;
	*ports = p;
	return 0;
}

/* Replaces 32-bit word `from` by `to` in a folded Internet checksum (RFC 1624). */
static __always_inline __u16 bench_csum_replace(__u16 check, __be32 from, __be32 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16) ~(from & 0xffff) + (__u16) ~(from >> 16) + (to & 0xffff) + (to >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __always_inline int bench_rewrite(void *data, struct iphdr *ip, const struct ref_value *v)
{
	struct ethhdr *eth = data;

	ip->check = bench_csum_replace(ip->check, ip->daddr, v->daddr);
	ip->daddr = v->daddr;
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, v->mac, ETH_ALEN);
	return XDP_TX;
}

SEC("xdp")
int bench_ref_hash(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ref_key key = {};
	struct ref_value *v;
	struct iphdr *ip;
	__be16 *ports;

	if (bench_l4(data, data_end, &ip, &ports))
		return XDP_PASS;
	key.saddr = ip->saddr;
	key.daddr = ip->daddr;
	key.sport = ports[0];
	key.dport = ports[1];
	key.proto = ip->protocol;
	v = bpf_map_lookup_elem(&bench_ref_flows, &key);
	return v ? bench_rewrite(data, ip, v) : XDP_PASS;
}

SEC("xdp")
int bench_ref_array(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ref_value *v;
	struct iphdr *ip;
	__be16 *ports;
	__u32 slot;

	if (bench_l4(data, data_end, &ip, &ports))
		return XDP_PASS;
	slot = (ip->saddr ^ ip->daddr ^ ports[0] ^ ((__u32)ports[1] << 16)) & 0xffff;
	v = bpf_map_lookup_elem(&bench_ref_slots, &slot);
	return v && v->daddr ? bench_rewrite(data, ip, v) : XDP_PASS;
}

SEC("xdp")
int bench_push_pop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth;

	if (data + sizeof(eth) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(&eth, data, sizeof(eth));
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(eth) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, &eth, sizeof(eth));
	if (bpf_xdp_adjust_head(ctx, sizeof(struct iphdr)))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(eth) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, &eth, sizeof(eth));
	return XDP_TX;
}

static __always_inline int bench_insert(void *map)
{
	struct xdp_flow_key key __attribute__((aligned(8))) = {};
	struct xdp_conn conn = {.backend_id = 1, .vip_id = 0};
	__u32 client = bench_next_client++;

	key.saddr[10] = key.saddr[11] = 0xff;
	__builtin_memcpy(&key.saddr[12], &client, 4);
	key.daddr[10] = key.daddr[11] = 0xff;
	key.daddr[12] = 10;
	key.sport = 1234;
	key.dport = bpf_htons(80);
	key.proto = IPPROTO_TCP;
	return bpf_map_update_elem(map, &key, &conn, BPF_ANY) ? XDP_ABORTED : XDP_PASS;
}

SEC("xdp")
int bench_insert_lru_percpu_lists(struct xdp_md *ctx)
{
	return bench_insert(&bench_lru_percpu_lists);
}

SEC("xdp")
int bench_insert_lru_common(struct xdp_md *ctx)
{
	return bench_insert(&bench_lru_common);
}

SEC("xdp")
int bench_insert_lru_percpu_hash(struct xdp_md *ctx)
{
	return bench_insert(&bench_lru_percpu_hash);
}

SEC("xdp")
int bench_insert_lru_per_cpu_maps(struct xdp_md *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id() & 1;
	void *lru = bpf_map_lookup_elem(&bench_lru_per_cpu_maps, &cpu);

	return lru ? bench_insert(lru) : XDP_ABORTED;
}

/* Repetitions of bench_live_probe that found the frame's first byte as the caller wrote it. */
__u64 bench_live_fresh = 0;
/* Repetitions of bench_live_probe in all. */
__u64 bench_live_runs = 0;

/*
 * What BPF_F_TEST_XDP_LIVE_FRAMES hands a program: counts the repetitions that still see the
 * caller's first byte (0xaa), then overwrites it and drops the frame (a dropped live frame is
 * recycled at once).
 */
SEC("xdp")
int bench_live_probe(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;

	if (data + 1 > data_end)
		return XDP_ABORTED;
	bench_live_runs++;
	if (*data == 0xaa)
		bench_live_fresh++;
	*data = 0xbb;
	return XDP_DROP;
}

/* A bare XDP_DROP: the live-frame baseline (the frame goes straight back to the page pool). */
SEC("xdp")
int bench_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}
