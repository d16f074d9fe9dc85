/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The socket-LB maps, declared once and shared by sock_lb.bpf.c, sockops.bpf.c and
 * sock_reaper.bpf.c. All are pinned by name, so the objects loaded with the same pin root share one
 * set. Needs lb.h and bpf_helpers.h first. Capacities are defaults: the agent sets max_entries
 * before load.
 */
#ifndef SLUICE_LB_MAPS_H
#define SLUICE_LB_MAPS_H

/* BPF_F_NO_PREALLOC, spelled out so the header also works under vmlinux.h. */
#define LB_MAP_F_NO_PREALLOC 1

/*
 * Services by {VIP, port, protocol}: the connect()-time lookup. Not preallocated: an update links a
 * new element and frees the old one after an RCU grace period, so a connect() that found a record
 * reads it whole (a preallocated map hands the old element to the next update at once).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_SERVICES);
	__uint(map_flags, LB_MAP_F_NO_PREALLOC);
	__type(key, struct lb_service_key);
	__type(value, struct lb_service);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_lb_services_v2 SEC(".maps");

/* Backends (service members) by backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_lb_backends_v1 SEC(".maps");

/* Selection tables: {service id, half|slot} -> backend id, and {service id, half|member|i} ->
 * member. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_SLOTS);
	__uint(map_flags, LB_MAP_F_NO_PREALLOC);
	__type(key, struct lb_slot_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_lb_slots_v1 SEC(".maps");

/* Live per-backend state for ejection and least-connections, indexed by backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS + 1);
	__type(key, __u32);
	__type(value, struct lb_backend_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_lb_backend_state_v2 SEC(".maps");

/* Per-CPU counters per backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS + 1);
	__type(key, __u32);
	__type(value, struct lb_backend_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_lb_backend_stats_v2 SEC(".maps");

/* Per-CPU counters (and the round-robin cursor) per service id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES + 1);
	__type(key, __u32);
	__type(value, struct lb_service_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_lb_service_stats_v2 SEC(".maps");

/*
 * Per-socket VIP and backend of live translated sockets, by socket cookie (bpf/lib/lb_sock.h).
 * Cookies are handed out in sequence, so consecutive connects use neighbouring entries: a record
 * costs no allocation and stays in warm memory.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_SOCK_TABLE_SIZE);
	__type(key, __u32);
	__type(value, struct lb_sock_slot);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_lb_sock_table_v1 SEC(".maps");

/* Overflow of the socket table (freed with the socket): the records that found no free entry. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, LB_MAP_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct lb_sock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_lb_sock_v1 SEC(".maps");

/* Client affinity: {client netns, service} -> backend, with last use. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_MAX_AFFINITY);
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_lb_affinity_v1 SEC(".maps");

/* UDP reverse translation: {socket, backend} -> VIP, so replies come from the VIP. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_MAX_UDP_REVNAT);
	__type(key, struct lb_revnat_key);
	__type(value, struct lb_revnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_lb_udp_revnat_v1 SEC(".maps");

#endif /* SLUICE_LB_MAPS_H */
