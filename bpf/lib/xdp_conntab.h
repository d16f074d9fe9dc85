/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The XDP load balancer's connection table: a set-associative LRU table in a BPF array, shared by
 * every CPU, written and read by the program itself (no kernel hash-map call on any path).
 *
 * Each array element is one set of XDP_CONN_WAYS flows. A flow's set is its table hash masked to
 * the number of sets (a power of two); within the set, a way holds the flow's key and its xdp_conn.
 * A lookup reads the set's tag line first and compares the full key only where the tag matches, so
 * a miss reads one cache line. An insert takes the way that already holds the same key (a SYN's
 * fresh choice replaces the old one), else an empty way, else the way whose last packet is the
 * oldest (jiffies, refreshed at most once a tick per flow): LRU within the set.
 *
 * Every CPU reads and writes the same sets without a lock. A way being rewritten while another CPU
 * reads it must not hand out a mixed (key, backend) pair: each way carries a check word that mixes
 * the flow's hash with its backend and VIP ids, and a read counts only when key and check agree
 * with what it read, whatever order the stores became visible in. Two CPUs inserting into one set
 * at the same moment may pick the same way; one flow then misses on its next packet and takes a
 * fresh Maglev choice (the same backend unless the table changed in that instant).
 */
#ifndef SLUICE_XDP_CONNTAB_H
#define SLUICE_XDP_CONNTAB_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#include "xdp_lb.h"

/* Ways per set (agent/abi/xdp.ts XDP_LB_CONN_WAYS): the loader sizes the array in sets of these. */
#define XDP_CONN_WAYS 16

struct xdp_conn_way {
	struct xdp_flow_key key; /* the flow (40 bytes) */
	struct xdp_conn conn;	 /* its backend and VIP ids */
	__u32 check;		 /* xdp_conn_check(hash, conn) when written */
	__u32 pad;
};

/*
 * One array element: a set. Tags and last-used times share the first cache line, so a miss reads
 * only it and an insert one line more (the way it writes).
 */
struct xdp_conn_set {
	__u16 tag[XDP_CONN_WAYS];  /* 0: empty way; else xdp_conn_tag of the flow's hash */
	__u16 used[XDP_CONN_WAYS]; /* xdp_conn_clock at the way's last packet */
	struct xdp_conn_way way[XDP_CONN_WAYS];
};

/* The tag: hash bits the set index does not use (16 of them, never 0); the key decides. */
static __always_inline __u16 xdp_conn_tag(__u32 hash)
{
	return (hash >> 16) | 1;
}

/*
 * The clock of last use: jiffies in units of 2^XDP_CONN_CLOCK_SHIFT (64 ms at HZ=250), 16 bits, so
 * it wraps after about 70 minutes; ages compare modulo that, so a way idle longer than a wrap may
 * look younger than it is.
 */
#define XDP_CONN_CLOCK_SHIFT 4

static __always_inline __u16 xdp_conn_clock(void)
{
	return bpf_jiffies64() >> XDP_CONN_CLOCK_SHIFT;
}

static __always_inline __u32 xdp_conn_check(__u32 hash, __u64 conn)
{
	return hash ^ ((__u32)conn * 0x9e3779b1) ^ ((__u32)(conn >> 32) * 0x85ebca6b);
}

/*
 * The table's hash of a flow key: its five 64-bit words, each multiplied by its own odd constant,
 * summed (independent multiplies, short dependency chain), then mixed (xor-shift, multiply,
 * xor-shift) so the low bits (the set) and the high bits (the tag) both depend on every word.
 * Seeded per node; it only spreads flows over sets — a collision costs a key compare, never a wrong
 * backend.
 */
static __always_inline __u32 xdp_conn_hash(const struct xdp_flow_key *key, __u64 seed)
{
	const __u64 *w = (const __u64 *)key;
	__u64 h = (w[0] ^ seed) * 0x9e3779b97f4a7c15ULL + w[1] * 0xc2b2ae3d27d4eb4fULL +
		  w[2] * 0x165667b19e3779f9ULL + w[3] * 0xd6e8feb86659fd93ULL +
		  w[4] * 0xff51afd7ed558ccdULL;

	h ^= h >> 32;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 29;
	return (__u32)h;
}

static __always_inline int xdp_flow_key_equal(const struct xdp_flow_key *a,
					      const struct xdp_flow_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

/*
 * Looks the flow up in its set. On a hit copies its xdp_conn to *out, marks the way used at `now`
 * and returns 0; -1 on a miss.
 */
static __always_inline int xdp_conn_find(struct xdp_conn_set *set, const struct xdp_flow_key *key,
					 __u32 hash, __u16 now, struct xdp_conn *out)
{
	__u16 tag = xdp_conn_tag(hash);

#pragma unroll
	for (int w = 0; w < XDP_CONN_WAYS; w++) {
		struct xdp_conn_way *way = &set->way[w];
		__u64 conn;

		if (set->tag[w] != tag || !xdp_flow_key_equal(&way->key, key))
			continue;
		/* One load: the pair the check is computed over is the pair handed out. */
		conn = *(volatile __u64 *)&way->conn;
		if (*(volatile __u32 *)&way->check != xdp_conn_check(hash, conn))
			continue;
		if (set->used[w] != now)
			set->used[w] = now;
		__builtin_memcpy(out, &conn, sizeof(conn));
		return 0;
	}
	return -1;
}

/* Records the flow's xdp_conn in its set (see the header comment for which way it takes). */
static __always_inline void xdp_conn_store(struct xdp_conn_set *set, const struct xdp_flow_key *key,
					   __u32 hash, __u32 now, const struct xdp_conn *conn)
{
	__u32 tag = xdp_conn_tag(hash), victim = 0, oldest = 0;
	struct xdp_conn_way *way;
	__u64 value;

#pragma unroll
	for (int w = 0; w < XDP_CONN_WAYS; w++) {
		__u16 way_tag = set->tag[w];
		__u32 age;

		if (way_tag == tag && xdp_flow_key_equal(&set->way[w].key, key)) {
			victim = w;
			break;
		}
		age = way_tag ? (__u16)(now - set->used[w]) : 0x10000;
		if (age > oldest) {
			oldest = age;
			victim = w;
		}
	}
	victim &= XDP_CONN_WAYS - 1;
	way = &set->way[victim];
	__builtin_memcpy(&value, conn, sizeof(value));
	/* Empty first, filled, then tagged: a reader meanwhile sees no tag or fails the check. */
	set->tag[victim] = 0;
	__builtin_memcpy(&way->key, key, sizeof(*key));
	*(volatile __u64 *)&way->conn = value;
	*(volatile __u32 *)&way->check = xdp_conn_check(hash, value);
	set->used[victim] = now;
	*(volatile __u16 *)&set->tag[victim] = tag;
}

#endif /* SLUICE_XDP_CONNTAB_H */
