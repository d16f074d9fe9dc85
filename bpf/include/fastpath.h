/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Same-node fast path (bpf/fastpath.bpf.c): the structs its maps share with the agent
 * (agent/abi/fastpath.ts). Addresses are 16 bytes, IPv4 stored v4-mapped (::ffff:a.b.c.d).
 */
#ifndef SLUICE_FASTPATH_H
#define SLUICE_FASTPATH_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Capacity of the sockhash (two entries per redirected connection); the agent may override it. */
#ifndef FP_MAX_SOCKETS
#define FP_MAX_SOCKETS 65536
#endif

/* Capacity of the node-local mesh endpoint set. */
#ifndef FP_MAX_ENDPOINTS
#define FP_MAX_ENDPOINTS 65536
#endif

/* fp_config.scope */
#define FP_SCOPE_MESH 0 /* only connections to a node-local mesh endpoint */
#define FP_SCOPE_ALL  1 /* any TCP pair whose two ends are on this node */

/* fp_sock_state.mode: a direction of a connection only ever moves UNDECIDED -> REDIRECT -> PASS. */
#define FP_MODE_UNDECIDED 0
#define FP_MODE_REDIRECT  1
#define FP_MODE_PASS	  2

/* Key of the sockhash: one established socket, seen from its own side. */
struct fp_sock_key {
	__u64 netns;	   /* netns cookie when the pair is loopback/same-address (tuples repeat per
			      netns), else 0 */
	__u32 local_ip[4]; /* local address, network order, IPv4 v4-mapped */
	__u32 remote_ip[4]; /* remote address, network order, IPv4 v4-mapped */
	__u16 local_port;   /* local port, host order */
	__u16 remote_port;  /* remote port, host order */
	__u32 pad;	    /* zero */
};

/* A node-local mesh endpoint (backend address and port) whose connections may take the fast path.
 */
struct fp_endpoint_key {
	__u32 ip[4]; /* endpoint address, network order, IPv4 v4-mapped */
	__u16 port;  /* endpoint port, host order */
	__u16 pad;   /* zero */
};

/* Run-time settings (array map, one entry, written by the agent). */
struct fp_config {
	__u32 enabled; /* 0: insert nothing, redirect nothing (connections already redirected fall
			  back) */
	__u32 scope;   /* FP_SCOPE_MESH or FP_SCOPE_ALL */
	__u32 max_queued_bytes; /* backpressure bound: redirect only while the peer holds fewer
				   unread bytes */
	__u32 max_msg_bytes;	/* a first send larger than this keeps the connection on the normal
				   path (0: no limit) */
	__u32 allow_blocking;	/* 1: also take blocking sockets (kernel returns EAGAIN to their
				   reads: tests only) */
	__u32 max_streak_msgs;	/* sends in a row from one side (peer silent) before it leaves the
				   fast path; 0: off */
	__u32 max_streak_bytes; /* bytes in a row from one side (peer silent) before it leaves the
				   fast path; 0: off */
	__u32 streak_exempt_bytes; /* a send at least this large does not count toward a streak
				      (one-way streams of large writes gain from redirect); 0: all
				      count */
};

/*
 * Per connection, keyed by its canonical fp_sock_key (fp_key_is_canonical): where each side's
 * socket and state are (so a side finds its peer once, at its first send) and the redirect claims.
 * Addresses are for probe reads only.
 */
struct fp_conn {
	__u64 sk0;    /* canonical side: struct sock address (0 until it joins the sockhash) */
	__u64 state0; /* canonical side: address of its struct fp_sock_state */
	__u64 sk1;    /* other side: struct sock address (0 until it joins the sockhash) */
	__u64 state1; /* other side: address of its struct fp_sock_state */
	__u64 redir0; /* FP_REDIR_*: may the canonical side still redirect (claimed once, by
			 cmpxchg) */
	__u64 redir1; /* FP_REDIR_*: may the other side still redirect */
};

/* fp_conn.redir*: a side claims OPEN->TAKEN before its first redirect; its peer claims OPEN->CLOSED
 * before it leaves the sockhash. Whoever claims first wins, so no redirect can race the peer's
 * removal. */
#define FP_REDIR_OPEN	0
#define FP_REDIR_TAKEN	1
#define FP_REDIR_CLOSED 2

/* A listening socket, so the passive side of its connections can be judged before accept(). */
struct fp_listener_key {
	__u64 netns; /* netns cookie of the listener */
	__u32
	    ip[4]; /* bound address, network order, IPv4 v4-mapped (:: or ::ffff:0.0.0.0 for any) */
	__u16 port; /* bound port, host order */
	__u16 pad;  /* zero */
	__u32 pad2; /* zero */
};

/* Per-CPU counters (one entry); the agent sums the CPUs. */
struct fp_stats {
	__u64 inserts;		     /* sockets added to the sockhash */
	__u64 insert_failures;	     /* sockets that could not be added (map full, ...) */
	__u64 redirected_msgs;	     /* sends handed straight to the peer socket */
	__u64 redirected_bytes;	     /* bytes in those sends */
	__u64 fallback_msgs;	     /* sends that took the normal TCP path */
	__u64 fallback_bytes;	     /* bytes in those sends */
	__u64 fallback_no_peer;	     /* connections moved to the normal path: peer socket not in the
					sockhash */
	__u64 fallback_backpressure; /* connections moved to the normal path: peer's unread bytes
					over the bound */
	__u64 fallback_disabled; /* connections moved to the normal path: fast path switched off */
	__u64 fallback_policy;	/* connections kept on the normal path by the message-size policy */
	__u64 redirect_errors;	/* redirect helper refused at the last moment (peer closing): normal
				   path */
	__u64 state_failures;	/* per-socket state could not be allocated: normal path */
	__u64 skipped_blocking; /* sockets left out of the sockhash because they block (see
				   docs/fastpath.md) */
	__u64 fallback_blocking; /* connections moved to the normal path: the peer became a blocking
				    socket */
	__u64 fallback_streaming; /* connections moved to the normal path: one-way streaming (streak
				     limits) */
	__u64 left_map; /* sockets that left the sockhash after both directions settled on the
			   normal path */
};

/* fp_sock_state.flags */
#define FP_STATE_CANONICAL	  1 /* this socket's key is its connection's canonical key */
#define FP_STATE_PEER_NONBLOCKING 2 /* the peer was seen with a non-blocking file */

/*
 * Per-socket state (socket local storage): everything a send needs, so a redirect that has been
 * decided costs one storage lookup and the redirect itself. Written by the socket's own sends only
 * (its peer reads `sends` with a probe read, never writes).
 */
struct fp_sock_state {
	__u32 mode;		 /* FP_MODE_*: sticky, so bytes are never reordered between paths */
	__u32 flags;		 /* FP_STATE_* */
	struct fp_sock_key peer; /* the peer's sockhash key: this socket's own key reversed */
	__u64 peer_sk;	  /* peer's struct sock address (probe reads only), from the first send */
	__u64 peer_state; /* peer's fp_sock_state address (probe reads only), from the first send */
	__u64 sends;	  /* sends of this socket through the sockhash (the peer's streak check) */
	__u64 peer_sends_mark; /* peer's `sends` when this socket last saw it change */
	__u64 streak_bytes;    /* bytes sent since then */
	__u64 unread_bound;    /* upper bound of the peer's unread redirected bytes: last read plus
				  what    this socket redirected since */
	__u32 streak_msgs;     /* sends since peer_sends_mark changed */
	__u32 pad;	       /* zero */
};

#endif /* SLUICE_FASTPATH_H */
