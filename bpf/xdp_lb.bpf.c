// SPDX-License-Identifier: Apache-2.0
/*
 * XDP load balancer for traffic entering the node (see docs/xdp.md). A TCP/UDP packet to a VIP:port
 * is sent to a backend chosen by the VIP's Maglev table, indexed by a seeded hash of the 5-tuple,
 * and kept there by a connection table; it leaves encapsulated (IPIP / IP6IP6) with XDP_TX for
 * direct server return. Everything else passes to the stack untouched. Also: xdp_decap, the
 * backend's side for kernels without an ipip device, and xdp_pass, a bare XDP_PASS (benchmark
 * baseline, veth peers).
 */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>

#include "xdp_lb.h"
#include "xdp_hash.h"
#include "xdp_parse.h"
#include "xdp_encap.h"
#include "xdp_conntab.h"

/*
 * Benchmark variants (test/bpf/progs/xdp_lb_stage_*.bpf.c include this file with XDP_LB_BENCH_STAGE
 * set): the program returns early after a stage, without counting, so bench/xdp.ts can tell where
 * the nanoseconds go. Stages: parse (+ VIP filter), choice (+ connection table or Maglev, backend),
 * encap (+ outer header; counters are what the full program adds). The production build has none.
 */
#define XDP_LB_STAGE_PARSE  1
#define XDP_LB_STAGE_CHOICE 2
#define XDP_LB_STAGE_ENCAP  3
#ifndef XDP_LB_BENCH_STAGE
#define XDP_LB_BENCH_STAGE 0
#endif
#define XDP_LB_BENCH_CUT(stage)                                                                    \
	do {                                                                                       \
		if (XDP_LB_BENCH_STAGE == (stage))                                                 \
			return XDP_PASS;                                                           \
	} while (0)

/* Settings, written by the loader before load. */
const volatile __u32 hash_seed = 0;		       /* flow-hash seed: equal on every node */
const volatile __u32 maglev_size = XDP_LB_MAGLEV_SIZE; /* entries per Maglev table (prime) */
const volatile __u32 conn_set_mask = XDP_LB_MAX_CONNS / XDP_CONN_WAYS - 1; /* sets - 1 (2^n - 1) */
const volatile __be32 encap_saddr4 = 0; /* outer IPv4 source (this node) */
const volatile __u8 encap_saddr6[16]
    __attribute__((aligned(8))) = {}; /* outer IPv6 source (this node) */
const volatile __u8 gateway_mac[6]
    __attribute__((aligned(4))) = {}; /* next hop MAC; zero: back to the sender */

/* VIP:port/protocol → its id and Maglev table. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDP_LB_MAX_VIPS);
	__type(key, struct xdp_vip_key);
	__type(value, struct xdp_vip);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_xdp_vips_v1 SEC(".maps");

/* VIP id → its address:port/protocol (zero when the id is free): a connection-table hit is
 * balanced only while its VIP id still names the flow's destination. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDP_LB_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct xdp_vip_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_xdp_vip_keys_v1 SEC(".maps");

/* Filter slot of a destination (xdp_vip_filter_slot) → non-zero when some VIP maps there: packets
 * of any other slot are no VIP's and pass without a hash lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDP_LB_VIP_FILTER_SLOTS);
	__type(key, __u32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_xdp_vip_filter_v1 SEC(".maps");

/* Backend id → tunnel address; slot 0 stays empty. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDP_LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct xdp_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_xdp_backends_v1 SEC(".maps");

/* All Maglev tables, maglev_size entries each: ring_id * maglev_size + hash % maglev_size → backend
 * id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDP_LB_MAX_RINGS *XDP_LB_MAGLEV_SIZE);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_xdp_maglev_v1 SEC(".maps");

/*
 * Flow → backend, so a flow stays put when the backend set changes: sets of XDP_CONN_WAYS flows
 * (bpf/lib/xdp_conntab.h), conn_set_mask + 1 of them (the loader sizes both from maxConns).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDP_LB_MAX_CONNS / XDP_CONN_WAYS);
	__type(key, __u32);
	__type(value, struct xdp_conn_set);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_xdp_conns_v2 SEC(".maps");

/* Packets and bytes per VIP id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDP_LB_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct xdp_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_xdp_vip_stats_v1 SEC(".maps");

/* Packets and bytes per backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDP_LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct xdp_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_xdp_backend_stats_v1 SEC(".maps");

/* Packets and bytes per enum xdp_lb_reason (each reason has one verdict). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDP_LB_REASON_MAX);
	__type(key, __u32);
	__type(value, struct xdp_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_xdp_verdicts_v1 SEC(".maps");

static __always_inline void xdp_count(void *map, __u32 index, __u64 bytes)
{
	struct xdp_counter *counter = bpf_map_lookup_elem(map, &index);

	if (counter) {
		counter->packets++;
		counter->bytes += bytes;
	}
}

static __always_inline int xdp_verdict(enum xdp_lb_reason reason, __u64 bytes)
{
	xdp_count(&sluice_xdp_verdicts_v1, reason, bytes);
	switch (reason) {
	case XDP_LB_TX_NEW_FLOW:
	case XDP_LB_TX_CONN_HIT:
		return XDP_TX;
	case XDP_LB_DROP_NO_BACKEND:
	case XDP_LB_DROP_ENCAP:
		return XDP_DROP;
	default:
		return XDP_PASS;
	}
}

static __always_inline enum xdp_lb_reason xdp_parse_reason(int err)
{
	switch (err) {
	case -ENODATA:
		return XDP_LB_PASS_TRUNCATED;
	case -EINVAL:
		return XDP_LB_PASS_MALFORMED;
	case -EAGAIN:
		return XDP_LB_PASS_FRAGMENT;
	case -EPROTONOSUPPORT:
		return XDP_LB_PASS_NOT_TCP_UDP;
	default:
		return XDP_LB_PASS_NOT_IP;
	}
}

/* A seeded hash of the flow's key (addresses as stored: IPv4 v4-mapped, hashed as the 4 IPv4
 * bytes).
 */
static __always_inline __u32 xdp_key_hash(const struct xdp_flow_key *key, __u8 family, __u32 seed)
{
	__u32 ports, s[4], d[4];

	__builtin_memcpy(&ports, &key->sport, 4);
	__builtin_memcpy(s, key->saddr, 16);
	__builtin_memcpy(d, key->daddr, 16);
	if (family == XDP_LB_AF_INET)
		return xdp_flow_hash_v4(s[3], d[3], ports, key->proto, seed);
	return xdp_flow_hash_v6(s, d, ports, key->proto, seed);
}

/* Mixed into the connection table's hash seed, so which set a flow lands in says nothing about its
 * Maglev slot (the Maglev hash is computed for new flows only). */
#define XDP_CONN_SEED_SALT 0x63c2a5f1

/* The VIP's Maglev choice for this flow: a backend id, or XDP_LB_NO_BACKEND. */
static __always_inline __u32 xdp_maglev_pick(const struct xdp_vip *vip, __u32 hash)
{
	__u32 size = maglev_size;
	__u32 index, *backend_id;

	if (!size)
		return XDP_LB_NO_BACKEND;
	index = vip->ring_id * size + hash % size;
	backend_id = bpf_map_lookup_elem(&sluice_xdp_maglev_v1, &index);
	return backend_id ? *backend_id : XDP_LB_NO_BACKEND;
}

static __always_inline struct xdp_backend *xdp_backend_get(__u32 id)
{
	struct xdp_backend *be;

	if (id == XDP_LB_NO_BACKEND)
		return NULL;
	be = bpf_map_lookup_elem(&sluice_xdp_backends_v1, &id);
	return be && be->family ? be : NULL;
}

/*
 * The VIP filter slot of a destination: the last 4 address bytes (the IPv4 address; the low bits of
 * an IPv6 one) folded to 16 bits, mixed with the port and protocol. agent/xdp/datapath.ts
 * vipFilterSlot computes the same.
 */
static __always_inline __u32 xdp_vip_filter_slot(const struct xdp_flow_key *key)
{
	__u32 addr;

	__builtin_memcpy(&addr, &key->daddr[12], 4);
	addr = bpf_ntohl(addr);
	return (addr ^ (addr >> 16) ^ bpf_ntohs(key->dport) ^ ((__u32)key->proto << 8)) &
	       (XDP_LB_VIP_FILTER_SLOTS - 1);
}

static __always_inline int xdp_vip_key_equal(const struct xdp_vip_key *a,
					     const struct xdp_vip_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

/* The load balancer: parse, look up, choose, encapsulate; returns the XDP verdict. */
static __always_inline int xdp_lb_handle(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	enum xdp_lb_reason reason = XDP_LB_TX_CONN_HIT;
	struct xdp_backend *be = NULL;
	struct xdp_vip_key vip_key = {};
	struct xdp_lb_pkt pkt = {};
	struct xdp_vip *vip;
	__u32 backend_id = 0, vip_id = 0;
	int err;

	err = xdp_lb_parse(data, data_end, &pkt);
	if (err)
		return xdp_verdict(xdp_parse_reason(err), bytes);

	/* No VIP maps to this destination's filter slot: passes without a hash lookup. */
	__u32 slot = xdp_vip_filter_slot(&pkt.key);
	__u8 *vip_here = bpf_map_lookup_elem(&sluice_xdp_vip_filter_v1, &slot);

	if (!vip_here || !*vip_here)
		return xdp_verdict(XDP_LB_PASS_NOT_VIP, bytes);
	XDP_LB_BENCH_CUT(XDP_LB_STAGE_PARSE);

	__builtin_memcpy(vip_key.addr, pkt.key.daddr, 16);
	vip_key.port = pkt.key.dport;
	vip_key.proto = pkt.key.proto;

	/*
	 * Known flow first: one set of the connection table. The entry counts while its VIP id
	 * still names this destination (a deleted VIP's id holds zeros, a reused one another key)
	 * and its backend slot is filled.
	 */
	__u32 conn_hash = xdp_conn_hash(&pkt.key, hash_seed ^ XDP_CONN_SEED_SALT);
	__u32 set_index = conn_hash & conn_set_mask;
	__u16 now = xdp_conn_clock();
	struct xdp_conn_set *set = bpf_map_lookup_elem(&sluice_xdp_conns_v2, &set_index);
	struct xdp_conn conn;

	if (set && !pkt.syn && xdp_conn_find(set, &pkt.key, conn_hash, now, &conn) == 0) {
		struct xdp_vip_key *owner =
		    bpf_map_lookup_elem(&sluice_xdp_vip_keys_v1, &conn.vip_id);

		if (owner && xdp_vip_key_equal(owner, &vip_key)) {
			backend_id = conn.backend_id;
			vip_id = conn.vip_id;
			be = xdp_backend_get(backend_id);
		}
	}
	if (!be) {
		/* New flow, TCP SYN, or the flow's backend was removed: a fresh choice. */
		vip = bpf_map_lookup_elem(&sluice_xdp_vips_v1, &vip_key);
		if (!vip)
			return xdp_verdict(XDP_LB_PASS_NOT_VIP, bytes);
		reason = XDP_LB_TX_NEW_FLOW;
		vip_id = vip->vip_id;
		backend_id = xdp_maglev_pick(vip, xdp_key_hash(&pkt.key, pkt.family, hash_seed));
		be = xdp_backend_get(backend_id);
		if (!be)
			return xdp_verdict(XDP_LB_DROP_NO_BACKEND, bytes);
		conn.backend_id = backend_id;
		conn.vip_id = vip_id;
		if (set)
			xdp_conn_store(set, &pkt.key, conn_hash, now, &conn);
	}

	XDP_LB_BENCH_CUT(XDP_LB_STAGE_CHOICE);

	/*
	 * Volatile reads of the loader's values (the compiler only saw zeros), and only what this
	 * packet needs: the IPv6 source for IPv6 backends, the gateway MAC as one 4- and one 2-byte
	 * load; the backend's address as words.
	 */
	struct xdp_encap_args args = {};

	args.backend_family = be->family;
	args.gw_lo = *(const volatile __u32 *)&gateway_mac[0];
	args.gw_hi = *(const volatile __u16 *)&gateway_mac[4];
	if (be->family == XDP_LB_AF_INET6) {
		args.saddr6[0] = *(const volatile __u64 *)&encap_saddr6[0];
		args.saddr6[1] = *(const volatile __u64 *)&encap_saddr6[8];
		args.daddr6[0] = *(const __u64 *)&be->addr[0];
		args.daddr6[1] = *(const __u64 *)&be->addr[8];
	} else {
		args.saddr4 = encap_saddr4;
		args.daddr4 = *(const __u32 *)&be->addr[12];
	}
	err = xdp_encap(ctx, &pkt, &args);
	if (err)
		return xdp_verdict(XDP_LB_DROP_ENCAP, bytes);
	if (XDP_LB_BENCH_STAGE == XDP_LB_STAGE_ENCAP)
		return XDP_TX;

	xdp_count(&sluice_xdp_vip_stats_v1, vip_id, bytes);
	xdp_count(&sluice_xdp_backend_stats_v1, backend_id, bytes);
	return xdp_verdict(reason, bytes);
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	return xdp_lb_handle(ctx);
}

/*
 * The load balancer, then its IPv4 encapsulation undone (benchmark harnesses below, IPv4 backends
 * only): the client's Ethernet header is saved first, and after an XDP_TX the outer header is
 * removed with one bpf_xdp_adjust_head and the header put back — exactly the pop half of
 * bench_push_pop (test/bpf/progs/xdp_bench.bpf.c), which bench/xdp.ts subtracts.
 */
static __always_inline int xdp_lb_and_undo(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth;
	int verdict;

	if (data + sizeof(eth) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(&eth, data, sizeof(eth));
	verdict = xdp_lb_handle(ctx);
	if (verdict != XDP_TX)
		return verdict;
	if (bpf_xdp_adjust_head(ctx, sizeof(struct iphdr)))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(eth) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, &eth, sizeof(eth));
	return verdict;
}

/*
 * Benchmark harness only (never attached): xdp_lb, then the encapsulation undone, so that
 * BPF_PROG_TEST_RUN's repetitions (which do not restore the packet) each see the client's packet
 * again.
 */
SEC("xdp")
int xdp_lb_bench(struct xdp_md *ctx)
{
	return xdp_lb_and_undo(ctx);
}

/*
 * Benchmark harness only (never attached): like xdp_lb_bench, then the client's IPv4 address
 * (untagged IPv4 frames) is bumped so that every repetition is a flow never seen before: a
 * connection-table miss, a Maglev choice and an insert.
 */
SEC("xdp")
int xdp_lb_bench_new(struct xdp_md *ctx)
{
	int verdict = xdp_lb_and_undo(ctx);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);

	if ((void *)(ip + 1) <= data_end)
		ip->saddr = bpf_htonl(bpf_ntohl(ip->saddr) + 1);
	return verdict;
}

/* Backend side: strips an outer IPIP / IP6IP6 / 4in6 / 6in4 header; everything else passes as is.
 */
SEC("xdp")
int xdp_decap_tunnel(struct xdp_md *ctx)
{
	xdp_decap(ctx);
	return XDP_PASS;
}

/* A bare XDP_PASS: the benchmark's baseline, and the program veth peers need for XDP_TX. */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
