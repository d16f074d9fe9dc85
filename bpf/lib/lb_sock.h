/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The per-socket record of a translated socket (the VIP it asked for, the backend it got), read by
 * getpeername, sockops and the reaper. It lives in the socket table (sluice_lb_sock_table_v1), at
 * the first free entry from its cookie's index: no allocation at connect() and no deferred free at
 * close, the two costs that made socket storage the largest part of a translated connect. A socket
 * that finds no free entry within LB_SOCK_PROBES keeps its record in socket storage
 * (sluice_lb_sock_v1) instead. Readers look in the table first. Needs lb.h, lb_maps.h and
 * bpf_helpers.h first.
 */
#ifndef SLUICE_LB_SOCK_H
#define SLUICE_LB_SOCK_H

static __always_inline struct lb_sock_slot *lb_sock_slot_at(__u64 cookie, __u32 probe)
{
	__u32 index = ((__u32)cookie + probe) & (LB_SOCK_TABLE_SIZE - 1);

	return bpf_map_lookup_elem(&sluice_lb_sock_table_v1, &index);
}

/* The table entry holding this socket's record, or NULL. */
static __always_inline struct lb_sock_slot *lb_sock_slot_find(__u64 cookie)
{
	struct lb_sock_slot *slot;

#pragma unroll
	for (__u32 probe = 0; probe < LB_SOCK_PROBES; probe++) {
		slot = lb_sock_slot_at(cookie, probe);
		if (slot && *(volatile __u64 *)&slot->cookie == cookie)
			return slot;
	}
	return 0;
}

/* This socket's record, for reading or updating; NULL when it has none. sk may be NULL. */
static __always_inline struct lb_sock *lb_sock_find(void *sk, __u64 cookie)
{
	struct lb_sock_slot *slot = lb_sock_slot_find(cookie);

	if (slot)
		return &slot->sock;
	return sk ? bpf_sk_storage_get(&sluice_lb_sock_v1, sk, 0, 0) : 0;
}

/*
 * A record for this socket to fill in: its existing table entry when it has one (a UDP socket
 * connecting again), else a free entry claimed by compare-and-swap, else socket storage.
 */
static __always_inline struct lb_sock *lb_sock_claim(void *sk, __u64 cookie, int may_have_one)
{
	struct lb_sock_slot *slot;

	if (may_have_one) {
		slot = lb_sock_slot_find(cookie);
		if (slot)
			return &slot->sock;
	}
#pragma unroll
	for (__u32 probe = 0; probe < LB_SOCK_PROBES; probe++) {
		slot = lb_sock_slot_at(cookie, probe);
		if (slot && !*(volatile __u64 *)&slot->cookie &&
		    __sync_val_compare_and_swap(&slot->cookie, 0, cookie) == 0)
			return &slot->sock;
	}
	return bpf_sk_storage_get(&sluice_lb_sock_v1, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
}

/* Frees the socket's table entries (socket storage goes with the socket itself). */
static __always_inline void lb_sock_release(__u64 cookie)
{
	struct lb_sock_slot *slot;

#pragma unroll
	for (__u32 probe = 0; probe < LB_SOCK_PROBES; probe++) {
		slot = lb_sock_slot_at(cookie, probe);
		if (slot && *(volatile __u64 *)&slot->cookie == cookie)
			*(volatile __u64 *)&slot->cookie = 0;
	}
}

#endif /* SLUICE_LB_SOCK_H */
