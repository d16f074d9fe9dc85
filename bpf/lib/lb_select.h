/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Backend selection for the socket-LB hooks: service lookup, policy (random/weighted through the
 * slot table, round-robin with a per-CPU cursor, least-connections by power of two choices), client
 * affinity, and skipping ejected backends with a panic fallback. Helpers return -errno; the entry
 * points decide. Needs lb.h, lb_maps.h and bpf_helpers.h first.
 */
#ifndef SLUICE_LB_SELECT_H
#define SLUICE_LB_SELECT_H

#ifndef ECONNREFUSED
#define ECONNREFUSED 111
#endif
#ifndef ENOENT
#define ENOENT 2
#endif

/* How far selection walks the slot table past an ejected pick before giving up (panic). */
#define LB_MAX_PROBE 1024
/* Most members the ejection floor looks at. */
#define LB_MAX_EJECT_SCAN 1024

#define LB_NSEC_PER_MSEC 1000000ULL
#define LB_NSEC_PER_SEC	 1000000000ULL

static __always_inline void lb_addr_set_v4(__u8 *addr, __u32 ip4)
{
	__u32 *w = (__u32 *)addr;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = ip4;
}

static __always_inline int lb_addr_is_v4(const __u8 *addr)
{
	const __u32 *w = (const __u32 *)addr;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

static __always_inline void lb_addr_copy(__u8 *dst, const __u8 *src)
{
	__u32 *d = (__u32 *)dst;
	const __u32 *s = (const __u32 *)src;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
}

static __always_inline int lb_addr_equal(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a;
	const __u32 *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* Slot-index prefix of the live member list (the slots themselves when they are the member list).
 */
static __always_inline __u32 lb_member_half(const struct lb_service *svc)
{
	__u32 half = svc->generation ? LB_SLOT_GEN_BIT : 0;

	if (!(svc->flags & LB_SVC_F_MEMBERS_ARE_SLOTS))
		half |= LB_SLOT_MEMBER_BIT;
	return half;
}

static __always_inline __u32 lb_slot_get(__u32 service_id, __u32 index)
{
	struct lb_slot_key key = {.service_id = service_id, .index = index};
	__u32 *backend_id = bpf_map_lookup_elem(&sluice_lb_slots_v1, &key);

	return backend_id ? *backend_id : 0;
}

/*
 * Slot `pos` of the live table (member `pos` when the members are the slots): from the record
 * itself when the service is inline, else from the slot map (`half` carries the half and member
 * bits).
 */
static __always_inline __u32 lb_live_slot(const struct lb_service *svc, __u32 half, __u32 pos)
{
	if (svc->flags & LB_SVC_F_INLINE)
		return svc->inline_slots[pos & (LB_INLINE_BACKENDS - 1)].id;
	return lb_slot_get(svc->id, half | pos);
}

/* True when selection may use the backend now; *now is read lazily (only for ejected backends). */
static __always_inline int lb_backend_usable(__u32 backend_id, __u64 *now)
{
	struct lb_backend_state *state;
	__u64 until;

	state = bpf_map_lookup_elem(&sluice_lb_backend_state_v2, &backend_id);
	if (!state)
		return 0;
	until = *(volatile __u64 *)&state->ejected_until_ns;
	if (!until)
		return 1;
	if (!*now)
		*now = bpf_ktime_get_ns();
	return *now >= until;
}

static __always_inline __s64 lb_backend_active(__u32 backend_id)
{
	struct lb_backend_state *state;

	state = bpf_map_lookup_elem(&sluice_lb_backend_state_v2, &backend_id);
	return state ? *(volatile __s64 *)&state->active : 0;
}

struct lb_probe_ctx {
	__u32 service_id;
	__u32 half;
	__u32 start;
	__u32 count;
	__u64 now;
	__u32 found;
	__u32 pad;
};

static long lb_probe_step(__u32 i, void *data)
{
	struct lb_probe_ctx *probe = data;
	__u32 backend_id;

	if (!probe->count)
		return 1;
	backend_id =
	    lb_slot_get(probe->service_id, probe->half | ((probe->start + i) % probe->count));
	if (backend_id && lb_backend_usable(backend_id, &probe->now)) {
		probe->found = backend_id;
		return 1;
	}
	return 0;
}

/*
 * The backend at slot `index`, or, when it is ejected, the next usable one in table order. When
 * every slot looked at is ejected the service is in panic and the first pick is used anyway.
 */
static __always_inline __u32 lb_slot_usable(const struct lb_service *svc, __u32 index, __u64 *now)
{
	__u32 half = svc->generation ? LB_SLOT_GEN_BIT : 0;
	__u32 backend_id = lb_live_slot(svc, half, index);
	struct lb_probe_ctx probe = {};
	__u32 steps, next;

	if (!backend_id || lb_backend_usable(backend_id, now))
		return backend_id;
	if (svc->flags & LB_SVC_F_INLINE) {
#pragma unroll
		for (__u32 k = 1; k < LB_INLINE_BACKENDS; k++) {
			if (k >= svc->slot_count)
				break;
			next = lb_live_slot(svc, half, (index + k) % svc->slot_count);
			if (next && lb_backend_usable(next, now))
				return next;
		}
		return backend_id;
	}
	probe.service_id = svc->id;
	probe.half = half;
	probe.start = index + 1;
	probe.count = svc->slot_count;
	probe.now = *now;
	steps = svc->slot_count - 1;
	if (steps > LB_MAX_PROBE)
		steps = LB_MAX_PROBE;
	bpf_loop(steps, lb_probe_step, &probe, 0);
	*now = probe.now;
	return probe.found ? probe.found : backend_id;
}

/* Least-connections: two distinct random members, the one with fewer active connections wins. */
static __always_inline __u32 lb_pick_least_conn(const struct lb_service *svc, __u64 *now)
{
	__u32 half = lb_member_half(svc);
	__u32 n = svc->backend_count;
	__u32 a, b, first, second;

	if (!n)
		return 0;
	a = bpf_get_prandom_u32() % n;
	b = n > 1 ? (a + 1 + bpf_get_prandom_u32() % (n - 1)) % n : a;
	first = lb_live_slot(svc, half, a);
	second = lb_live_slot(svc, half, b);
	if (!first || !lb_backend_usable(first, now))
		return second && lb_backend_usable(second, now) ? second : 0;
	if (!second || second == first || !lb_backend_usable(second, now))
		return first;
	return lb_backend_active(second) < lb_backend_active(first) ? second : first;
}

static __always_inline __u32 lb_pick(const struct lb_service *svc, __u64 *now)
{
	struct lb_service_stats *stats;
	__u32 service_id = svc->id;
	__u32 n = svc->slot_count;
	__u32 index, backend_id;

	if (!n)
		return 0;
	switch (svc->algorithm) {
	case LB_ALG_ROUND_ROBIN:
		stats = bpf_map_lookup_elem(&sluice_lb_service_stats_v2, &service_id);
		if (stats)
			index = stats->rr_cursor++ % n;
		else
			index = bpf_get_prandom_u32() % n;
		break;
	case LB_ALG_LEAST_CONN:
		backend_id = lb_pick_least_conn(svc, now);
		if (backend_id)
			return backend_id;
		/* every pick ejected: fall through to the table walk, which panics if it must */
		index = bpf_get_prandom_u32() % n;
		break;
	default:
		index = bpf_get_prandom_u32() % n;
		break;
	}
	return lb_slot_usable(svc, index, now);
}

/* Affinity: the remembered backend while it is fresh, still this service's and usable. */
static __always_inline __u32 lb_affinity_get(const struct lb_service *svc, __u64 netns_cookie,
					     __u64 *now)
{
	struct lb_affinity_key key = {.netns_cookie = netns_cookie, .service_id = svc->id};
	struct lb_affinity *entry;
	struct lb_backend *backend;
	__u32 backend_id;

	entry = bpf_map_lookup_elem(&sluice_lb_affinity_v1, &key);
	if (!entry)
		return 0;
	if (!*now)
		*now = bpf_ktime_get_ns();
	if (*now - entry->last_used_ns > (__u64)svc->affinity_timeout_s * LB_NSEC_PER_SEC)
		return 0;
	backend_id = entry->backend_id;
	backend = bpf_map_lookup_elem(&sluice_lb_backends_v1, &backend_id);
	if (!backend || backend->service_id != svc->id || backend->state != LB_BACKEND_ACTIVE)
		return 0;
	if (!lb_backend_usable(backend_id, now))
		return 0;
	entry->last_used_ns = *now;
	return backend_id;
}

static __always_inline void lb_affinity_put(const struct lb_service *svc, __u64 netns_cookie,
					    __u32 backend_id, __u64 now)
{
	struct lb_affinity_key key = {.netns_cookie = netns_cookie, .service_id = svc->id};
	struct lb_affinity value = {.last_used_ns = now, .backend_id = backend_id};

	bpf_map_update_elem(&sluice_lb_affinity_v1, &key, &value, BPF_ANY);
}

/* One more connect to the backend (the service's connects are its backends'). */
static __always_inline void lb_count_connect(__u32 backend_id)
{
	struct lb_backend_state *state;

	state = bpf_map_lookup_elem(&sluice_lb_backend_state_v2, &backend_id);
	if (state)
		__sync_fetch_and_add(&state->connects, 1);
}

static __always_inline void lb_count_no_backend(__u32 service_id)
{
	struct lb_service_stats *stats;

	stats = bpf_map_lookup_elem(&sluice_lb_service_stats_v2, &service_id);
	if (stats)
		stats->no_backend++;
}

#endif /* SLUICE_LB_SELECT_H */
