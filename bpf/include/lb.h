/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket load balancing ABI: every key and value shared between the socket-LB programs
 * (sock_lb.bpf.c, sockops.bpf.c, sock_reaper.bpf.c) and the agent (agent/abi/lb.ts). Include it
 * after <linux/types.h> or vmlinux.h. Addresses are 16 bytes: IPv6 as is, IPv4 as v4-mapped
 * ::ffff:a.b.c.d. Layout changes bump the _v1 suffix of the maps that carry the struct
 * (bpf/lib/lb_maps.h).
 */
#ifndef SLUICE_LB_H
#define SLUICE_LB_H

/* Capacities (defaults; the agent overrides max_entries before load through its settings). */
#ifndef LB_MAX_SERVICES
#define LB_MAX_SERVICES 65536
#endif
#ifndef LB_MAX_BACKENDS
#define LB_MAX_BACKENDS 65536
#endif
#ifndef LB_MAX_SLOTS
#define LB_MAX_SLOTS 1048576
#endif
#ifndef LB_MAX_AFFINITY
#define LB_MAX_AFFINITY 65536
#endif
#ifndef LB_MAX_UDP_REVNAT
#define LB_MAX_UDP_REVNAT 65536
#endif
/*
 * Socket table: records of live translated sockets, indexed by socket cookie. Fixed (not a
 * setting): a socket that finds no free entry within LB_SOCK_PROBES keeps its record in socket
 * storage instead, so the size bounds only the fast case, never correctness. A power of two.
 */
#define LB_SOCK_TABLE_SIZE 131072
#define LB_SOCK_PROBES	   4

/* Slot key index bits: which half of the double-buffered table, and the member-list region. */
#define LB_SLOT_GEN_BIT	   0x80000000u
#define LB_SLOT_MEMBER_BIT 0x40000000u
#define LB_SLOT_INDEX_MASK 0x3fffffffu

/* lb_service.algorithm */
#define LB_ALG_RANDOM	   0
#define LB_ALG_WEIGHTED	   1
#define LB_ALG_ROUND_ROBIN 2
#define LB_ALG_LEAST_CONN  3

/* lb_service.flags */
#define LB_SVC_F_AFFINITY	   0x01 /* client (netns cookie) affinity with a timeout */
#define LB_SVC_F_NODE_LOCAL	   0x02 /* only node-local backends are in the table (informational) */
#define LB_SVC_F_MEMBERS_ARE_SLOTS 0x04 /* member i is slot i: no member-list entries */
#define LB_SVC_F_INLINE		   0x08 /* the live slots are in the record itself (inline) */

/*
 * Slots a service record carries itself: an unweighted service of up to this many usable backends
 * is chosen from the record alone (no slot or backend lookup on connect()). A power of two.
 */
#define LB_INLINE_BACKENDS 4

/* lb_backend.state */
#define LB_BACKEND_ACTIVE   1 /* in the service's selection table */
#define LB_BACKEND_DRAINING 2 /* kept for existing sockets, never selected */

/* lb_backend.flags */
#define LB_BACKEND_F_LOCAL 0x01 /* the backend runs on this node */

/* lb_sock.flags */
#define LB_SOCK_F_ACTIVE 0x01 /* counted in its backend's active connections */

/* Service lookup key: the address and port an application connects to. */
struct lb_service_key {
	__u8 addr[16]; /* VIP, v4-mapped for IPv4 */
	__be16 port;   /* VIP port, network order */
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;      /* zero */
};

/* A backend as an inline slot of its service record: what connect() needs to reach it. */
struct lb_inline_backend {
	__u8 addr[16]; /* backend address, v4-mapped for IPv4 */
	__be16 port;   /* backend port, network order */
	__u16 pad;     /* zero */
	__u32 id;      /* backend id (state, counters, sockops) */
};

/* A service: how to choose among its backends. Replaced whole: readers never see half of one. */
struct lb_service {
	__u32 id;	     /* service id, index into the per-service maps (1..max services) */
	__u8 algorithm;	     /* LB_ALG_* */
	__u8 flags;	     /* LB_SVC_F_* */
	__u8 generation;     /* live half of the slot table: 0 or 1 */
	__u8 max_eject_pct;  /* at most this % of the members ejected at once (floor) */
	__u16 slot_count;    /* slots in the live half; 0 = no usable backend */
	__u16 backend_count; /* members in the live half */
	__u32 affinity_timeout_s; /* affinity entry lifetime since last use, seconds */
	__u16 eject_threshold;	  /* consecutive failed connects that eject a backend; 0 = off */
	__u16 pad;		  /* zero */
	__u32 eject_base_ms;	  /* ejection time = base x consecutive ejections ... */
	__u32 eject_max_ms;	  /* ... capped at this */
	struct lb_inline_backend inline_slots[LB_INLINE_BACKENDS]; /* LB_SVC_F_INLINE: slot i */
};

/* A backend as a member of one service (a backend id belongs to exactly one service). */
struct lb_backend {
	__u8 addr[16];	  /* backend address, v4-mapped for IPv4 */
	__be16 port;	  /* backend port, network order */
	__u16 weight;	  /* relative weight (1..65535) */
	__u8 state;	  /* LB_BACKEND_* */
	__u8 flags;	  /* LB_BACKEND_F_* */
	__u16 pad;	  /* zero */
	__u32 service_id; /* owning service id */
};

/* Key of the selection table: a slot, or a member, in one half of one service's table. */
struct lb_slot_key {
	__u32 service_id; /* owning service id */
	__u32 index;	  /* LB_SLOT_GEN_BIT | [LB_SLOT_MEMBER_BIT] | position */
};

/*
 * Live, shared state of a backend (array indexed by backend id): what selection, sockops and the
 * counters of every connection touch, in one cache line. The connect and close counts live here,
 * not per CPU: the same line is already written atomically per connection (active), so a per-CPU
 * copy would only add memory a connect() touches.
 */
struct lb_backend_state {
	__u64 ejected_until_ns; /* bpf_ktime_get_ns() until which selection skips it; 0 = not
				   ejected */
	__s64 active; /* established TCP connections now open (atomic, for least-connections) */
	__u32 consecutive_fails;  /* failed connects since the last established one */
	__u32 consecutive_ejects; /* ejections in a row, multiplies the ejection time */
	__u32 service_id; /* owning service, written with the member (0 once reclaimed): a socket
			     whose backend id was freed, maybe reused, no longer matches */
	__u32 pad;	  /* zero */
	__u64 connects;	  /* connect()/sendmsg() translated to it (atomic) */
	__u64 closed;	  /* established TCP connections that closed (atomic) */
};

/* Per-CPU counters of a backend's rare events (sum over CPUs). */
struct lb_backend_stats {
	__u64 connect_failures; /* TCP connects that went SYN_SENT -> CLOSE */
	__u64 ejections;	/* times it was ejected */
};

/*
 * Per-CPU counters of a service (sum over CPUs). Its connects are its backends' (the agent sums
 * them): counting them here too would cost every connect() two more memory lines.
 */
struct lb_service_stats {
	__u64 connect_failures; /* failed TCP connects to its backends */
	__u64 no_backend;	/* connects refused because no backend was usable */
	__u64 ejections;	/* backend ejections */
	__u64 rr_cursor;	/* round-robin position of this CPU */
};

/* Per-socket record: the VIP a translated socket asked for and the backend it got. */
struct lb_sock {
	__u8 addr[16];	  /* VIP, v4-mapped for IPv4 */
	__be16 port;	  /* VIP port, network order */
	__u8 proto;	  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 flags;	  /* LB_SOCK_F_* */
	__u32 service_id; /* service chosen through */
	__u32 backend_id; /* backend chosen */
};

/*
 * Socket table entry: the record of one live translated socket, at index (cookie + probe) modulo
 * LB_SOCK_TABLE_SIZE. Claimed by compare-and-swap on cookie at connect(), freed (cookie 0) when the
 * socket is done: sockops at TCP CLOSE, cgroup/sock_release otherwise.
 */
struct lb_sock_slot {
	__u64 cookie;	     /* bpf_get_socket_cookie() of the owner; 0 = free */
	struct lb_sock sock; /* the record */
};

/* Client affinity key: one client network namespace and one service. */
struct lb_affinity_key {
	__u64 netns_cookie; /* bpf_get_netns_cookie() of the client */
	__u32 service_id;   /* service id */
	__u32 pad;	    /* zero */
};

/* Client affinity value. */
struct lb_affinity {
	__u64 last_used_ns; /* bpf_ktime_get_ns() of the last connect that used it */
	__u32 backend_id;   /* backend the client sticks to */
	__u32 pad;	    /* zero */
};

/* Reverse translation for unconnected UDP: which VIP a socket sent to, by backend. */
struct lb_revnat_key {
	__u64 cookie;  /* bpf_get_socket_cookie() of the client socket */
	__u8 addr[16]; /* backend address, v4-mapped for IPv4 */
	__be16 port;   /* backend port, network order */
	__u8 pad[6];   /* zero */
};

/* Reverse translation value: the VIP that replies must appear to come from. */
struct lb_revnat {
	__u8 addr[16]; /* VIP, v4-mapped for IPv4 */
	__be16 port;   /* VIP port, network order */
	__u16 pad;     /* zero */
};

#endif /* SLUICE_LB_H */
