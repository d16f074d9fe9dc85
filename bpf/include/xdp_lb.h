/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ABI of the XDP load balancer (bpf/xdp_lb.bpf.c): map keys and values shared with the agent
 * (agent/abi/xdp.ts encodes them; test/bpf/abi-btf.test.ts checks both against BTF).
 * Addresses are always 16 bytes: IPv6 as is, IPv4 as v4-mapped ::ffff:a.b.c.d.
 */
#ifndef SLUICE_XDP_LB_H
#define SLUICE_XDP_LB_H

#include <linux/types.h>

/* Default Maglev table size per VIP (prime); the loader may set another prime in maglev_size. */
#define XDP_LB_MAGLEV_SIZE 65537

/* Capacities; the loader may override max_entries of each map. */
#ifndef XDP_LB_MAX_VIPS
#define XDP_LB_MAX_VIPS 16384
#endif
#ifndef XDP_LB_MAX_BACKENDS
#define XDP_LB_MAX_BACKENDS 4096
#endif
/* Maglev tables held by sluice_xdp_maglev_v1 by default (max_entries = rings * maglev_size). */
#ifndef XDP_LB_MAX_RINGS
#define XDP_LB_MAX_RINGS 16
#endif
#ifndef XDP_LB_MAX_CONNS
#define XDP_LB_MAX_CONNS 131072
#endif

/* Backend id 0 is never used: a Maglev table slot holding 0 means "no backend". */
#define XDP_LB_NO_BACKEND 0

/* Slots of the VIP filter sluice_xdp_vip_filter_v1 (a power of two). */
#define XDP_LB_VIP_FILTER_SLOTS 65536

/* Address families in struct xdp_backend (Linux AF_* values). */
#define XDP_LB_AF_INET	2
#define XDP_LB_AF_INET6 10

/* Why a packet got its verdict: the index into sluice_xdp_verdicts_v1. Keep in step with
 * agent/abi/xdp.ts. */
enum xdp_lb_reason {
	XDP_LB_PASS_NOT_IP = 0,	     /* XDP_PASS: not IPv4/IPv6 (ARP, LLDP, stacked VLANs, ...) */
	XDP_LB_PASS_TRUNCATED = 1,   /* XDP_PASS: a header runs past the end of the frame */
	XDP_LB_PASS_MALFORMED = 2,   /* XDP_PASS: bad IP version, header length or total length */
	XDP_LB_PASS_FRAGMENT = 3,    /* XDP_PASS: an IP fragment (the stack reassembles it) */
	XDP_LB_PASS_NOT_TCP_UDP = 4, /* XDP_PASS: ICMP, other protocols, IPv6 extension headers */
	XDP_LB_PASS_NOT_VIP = 5,     /* XDP_PASS: TCP/UDP to an address:port that is not a VIP */
	XDP_LB_TX_NEW_FLOW = 6,	     /* XDP_TX: Maglev choice (new flow or TCP SYN), encapsulated */
	XDP_LB_TX_CONN_HIT = 7,	     /* XDP_TX: connection-table hit, encapsulated */
	XDP_LB_DROP_NO_BACKEND = 8,  /* XDP_DROP: VIP with no usable backend */
	XDP_LB_DROP_ENCAP = 9, /* XDP_DROP: encapsulation impossible (no source address, no room) */
	XDP_LB_REASON_MAX = 10,
};

/* Key of sluice_xdp_vips_v1: a VIP is an address, a port and a protocol. */
struct xdp_vip_key {
	__u8 addr[16]; /* VIP address (IPv4 v4-mapped) */
	__be16 port;   /* VIP port, network byte order */
	__u8 proto;    /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__u8 pad;      /* zero */
};

/* Value of sluice_xdp_vips_v1. */
struct xdp_vip {
	__u32 vip_id;  /* index of this VIP's counters in sluice_xdp_vip_stats_v1 */
	__u32 ring_id; /* this VIP's Maglev table: entries [ring_id * maglev_size, +maglev_size) */
};

/* Value of sluice_xdp_backends_v1, indexed by backend id (1..max; 0 is "no backend"). */
struct xdp_backend {
	__u8 addr[16]; /* where packets are tunnelled (IPv4 v4-mapped) */
	__u8 family;   /* XDP_LB_AF_INET or XDP_LB_AF_INET6; 0 marks an empty slot */
	__u8 pad[3];   /* zero */
};

/* Key of sluice_xdp_conns_v1: the 5-tuple as the client sent it. */
struct xdp_flow_key {
	__u8 saddr[16]; /* client address (IPv4 v4-mapped) */
	__u8 daddr[16]; /* VIP address (IPv4 v4-mapped) */
	__be16 sport;	/* client port, network byte order */
	__be16 dport;	/* VIP port, network byte order */
	__u8 proto;	/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[3];	/* zero */
};

/* Value of sluice_xdp_conns_v1. */
struct xdp_conn {
	__u32 backend_id; /* backend the flow stays on */
	__u32 vip_id;	  /* VIP the flow belongs to (for listing and flushing per VIP) */
};

/* Value of the counter maps (per CPU; userspace sums the CPUs). */
struct xdp_counter {
	__u64 packets; /* packets counted */
	__u64 bytes;   /* their bytes as received (L2 frame, before encapsulation) */
};

#endif /* SLUICE_XDP_LB_H */
