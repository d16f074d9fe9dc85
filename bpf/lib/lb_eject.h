/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Passive outlier ejection and active-connection accounting, driven by sockops. A connect that goes
 * SYN_SENT -> CLOSE (refused or timed out) counts a consecutive failure for its backend; an
 * established one resets the count. At the service's threshold the backend is ejected until now +
 * base x consecutive ejections (capped), unless that would eject more than the service's
 * max-ejection percentage of its members (at least one may always be ejected). Needs lb.h,
 * lb_maps.h, lb_select.h first.
 */
#ifndef SLUICE_LB_EJECT_H
#define SLUICE_LB_EJECT_H

struct lb_eject_scan {
	__u32 service_id;
	__u32 half;
	__u64 now;
};

/*
 * The running count of ejected members lives in a per-CPU scratch map, not on the stack: a stack
 * counter that a later branch reads would make the verifier walk every bpf_loop iteration
 * separately.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} lb_eject_count SEC(".maps");

static long lb_eject_scan_step(__u32 i, void *data)
{
	struct lb_eject_scan *scan = data;
	struct lb_backend_state *state;
	__u32 backend_id, zero = 0;
	__u32 *ejected;

	backend_id = lb_slot_get(scan->service_id, scan->half | i);
	if (!backend_id)
		return 0;
	state = bpf_map_lookup_elem(&sluice_lb_backend_state_v2, &backend_id);
	if (!state || state->ejected_until_ns <= scan->now)
		return 0;
	ejected = bpf_map_lookup_elem(&lb_eject_count, &zero);
	if (ejected)
		*ejected += 1;
	return 0;
}

/* True when ejecting one more member keeps the service within its max-ejection percentage. */
static __always_inline int lb_eject_allowed(const struct lb_service *svc, __u64 now)
{
	struct lb_eject_scan scan = {};
	__u32 members = svc->backend_count;
	__u32 zero = 0, count;
	__u32 *ejected;

	ejected = bpf_map_lookup_elem(&lb_eject_count, &zero);
	if (!ejected)
		return 0;
	*ejected = 0;
	scan.service_id = svc->id;
	scan.half = lb_member_half(svc);
	scan.now = now;
	if (members > LB_MAX_EJECT_SCAN)
		members = LB_MAX_EJECT_SCAN;
	bpf_loop(members, lb_eject_scan_step, &scan, 0);
	count = *ejected;
	if (count == 0)
		return 1;
	return (count + 1) * 100 <= (__u32)svc->backend_count * svc->max_eject_pct;
}

static __always_inline struct lb_service *lb_sock_service(struct lb_sock *sock)
{
	struct lb_service_key key __attribute__((aligned(8))) = {};
	struct lb_service *svc;

	lb_addr_copy(key.addr, sock->addr);
	key.port = sock->port;
	key.proto = sock->proto;
	svc = bpf_map_lookup_elem(&sluice_lb_services_v2, &key);
	if (!svc || svc->id != sock->service_id)
		return 0;
	return svc;
}

/* A connect to the socket's backend failed. */
static __always_inline void lb_connect_failed(struct lb_sock *sock)
{
	struct lb_service_stats *svc_stats;
	struct lb_backend_stats *be_stats;
	struct lb_backend_state *state;
	__u32 backend_id = sock->backend_id;
	__u32 service_id = sock->service_id;
	struct lb_service *svc;
	__u64 now, duration;
	__u32 fails, ejects;

	be_stats = bpf_map_lookup_elem(&sluice_lb_backend_stats_v2, &backend_id);
	if (be_stats)
		be_stats->connect_failures++;
	svc_stats = bpf_map_lookup_elem(&sluice_lb_service_stats_v2, &service_id);
	if (svc_stats)
		svc_stats->connect_failures++;
	state = bpf_map_lookup_elem(&sluice_lb_backend_state_v2, &backend_id);
	if (!state || state->service_id != service_id)
		return; /* left the service (its id may be free or reused) */
	__sync_fetch_and_add(&state->consecutive_fails, 1);
	fails = *(volatile __u32 *)&state->consecutive_fails;
	svc = lb_sock_service(sock);
	if (!svc || !svc->eject_threshold || fails < svc->eject_threshold)
		return;
	now = bpf_ktime_get_ns();
	if (state->ejected_until_ns > now)
		return; /* already out */
	if (!lb_eject_allowed(svc, now))
		return;
	ejects = state->consecutive_ejects + 1;
	state->consecutive_ejects = ejects;
	duration = (__u64)svc->eject_base_ms * ejects;
	if (duration > svc->eject_max_ms)
		duration = svc->eject_max_ms;
	state->ejected_until_ns = now + duration * LB_NSEC_PER_MSEC;
	state->consecutive_fails = 0;
	if (be_stats)
		be_stats->ejections++;
	if (svc_stats)
		svc_stats->ejections++;
}

/* A connect to the socket's backend succeeded. */
static __always_inline void lb_connect_established(struct lb_sock *sock)
{
	struct lb_backend_state *state;
	__u32 backend_id = sock->backend_id;
	struct lb_service *svc;
	__u64 now;

	state = bpf_map_lookup_elem(&sluice_lb_backend_state_v2, &backend_id);
	if (!state || state->service_id != sock->service_id)
		return;
	__sync_fetch_and_add(&state->active, 1);
	sock->flags |= LB_SOCK_F_ACTIVE;
	if (state->consecutive_fails)
		state->consecutive_fails = 0;
	if (!state->consecutive_ejects)
		return;
	/* Healthy for a whole capped ejection time after the last ejection: forget the multiplier.
	 */
	svc = lb_sock_service(sock);
	if (!svc)
		return;
	now = bpf_ktime_get_ns();
	if (now > state->ejected_until_ns + (__u64)svc->eject_max_ms * LB_NSEC_PER_MSEC)
		state->consecutive_ejects = 0;
}

/* An established connection to the socket's backend closed. */
static __always_inline void lb_connection_closed(struct lb_sock *sock)
{
	struct lb_backend_state *state;
	__u32 backend_id = sock->backend_id;

	sock->flags &= ~LB_SOCK_F_ACTIVE;
	/* A backend id freed (maybe reused) since the connect is no longer this socket's. */
	state = bpf_map_lookup_elem(&sluice_lb_backend_state_v2, &backend_id);
	if (!state || state->service_id != sock->service_id)
		return;
	__sync_fetch_and_add(&state->active, -1);
	__sync_fetch_and_add(&state->closed, 1);
}

#endif /* SLUICE_LB_EJECT_H */
