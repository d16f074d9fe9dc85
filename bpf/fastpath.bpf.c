// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Same-node fast path. A sock_ops program puts established TCP sockets whose two ends are on this
 * node into a sockhash keyed by their 4-tuple; an sk_msg program hands each send straight to the
 * peer socket's receive side (bpf_msg_redirect_hash with BPF_F_INGRESS), skipping the TCP/IP stack
 * twice.
 *
 * Ordering: each direction of a connection has a sticky mode in socket storage, UNDECIDED ->
 * REDIRECT -> PASS and never back. The receiver reads its psock queue (redirected bytes) before its
 * TCP receive queue, so a direction that switches from REDIRECT to PASS keeps its byte order; a
 * direction that ever sent on the normal path (peer not yet in the map) stays there, so redirected
 * bytes never overtake TCP bytes.
 *
 * Where it wins: redirect beats TCP for request/response, but loses for one-way streaming of small
 * writes (each redirect costs more than a loopback segment); a side that keeps sending while its
 * peer stays silent past max_streak_msgs / max_streak_bytes moves to the normal path.
 *
 * Backpressure: redirected bytes are not bounded by the receiver's buffer, so a direction redirects
 * only while the peer holds fewer than max_queued_bytes unread; past that it moves to the normal
 * path, where TCP's own flow control pushes back on the sender.
 *
 * Cost per send: once a direction redirects, a send reads only its own socket storage (which holds
 * the peer's key and address) and the config, then redirects. What only matters at decision points
 * is done there: the peer's unread bytes are read only when an upper bound of them (last read plus
 * what this side redirected since) would pass the limit, and the peer's send count (streak policy)
 * only when this side's own streak passes a limit.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "fastpath.h"
#include "fastpath_key.h"
#include "fastpath_peer.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Established same-node sockets by their own 4-tuple; the kernel removes a socket when it closes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, FP_MAX_SOCKETS);
	__type(key, struct fp_sock_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_fp_socks_v1 SEC(".maps");

/*
 * Per connection (by canonical key): where each side's socket and state are, so a side finds its
 * peer once (the sockhash gives sk_msg no reference it could release; the addresses are only ever
 * read with bpf_probe_read_kernel), and the redirect claims that let a socket leave the sockhash
 * safely. Written when a side joins the sockhash, removed when either side closes. Not LRU:
 * evicting a live claim would be a race; not preallocated: an element deleted while a send holds
 * it must not be reused under it. Full: the socket does not join.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FP_MAX_SOCKETS);
	__type(key, struct fp_sock_key);
	__type(value, struct fp_conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_fp_conns_v2 SEC(".maps");

/* Listening sockets that do not block, so their accepted sockets may join before accept(). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FP_MAX_ENDPOINTS);
	__type(key, struct fp_listener_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_fp_listeners_v1 SEC(".maps");

/* Node-local mesh endpoints (backend address, port) whose connections may be redirected. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_MAX_ENDPOINTS);
	__type(key, struct fp_endpoint_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_fp_endpoints_v1 SEC(".maps");

/* Run-time settings: on/off, scope, backpressure bound. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_fp_config_v1 SEC(".maps");

/* Counters, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_fp_stats_v1 SEC(".maps");

/*
 * Per-socket state of each socket in the sockhash: sticky per-direction mode, the peer it sends to,
 * streak and backpressure bookkeeping (pinned: it must outlive a restart).
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fp_sock_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_fp_state_v2 SEC(".maps");

static __always_inline struct fp_config *fp_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sluice_fp_config_v1, &zero);
}

static __always_inline struct fp_stats *fp_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sluice_fp_stats_v1, &zero);
}

/* Whether a new connection is one the fast path may take, per the configured scope. */
static __always_inline bool fp_eligible(const struct fp_config *cfg, const struct fp_sock_key *key,
					bool active)
{
	struct fp_endpoint_key ep = {};

	if (cfg->scope == FP_SCOPE_ALL)
		return fp_addresses_local(key);
	/* The active side connected to the endpoint; the passive side is the endpoint. */
	if (active) {
		__builtin_memcpy(ep.ip, key->remote_ip, sizeof(ep.ip));
		ep.port = key->remote_port;
	} else {
		__builtin_memcpy(ep.ip, key->local_ip, sizeof(ep.ip));
		ep.port = key->local_port;
	}
	return bpf_map_lookup_elem(&sluice_fp_endpoints_v1, &ep) != NULL;
}

static __always_inline void fp_listener_key(struct fp_listener_key *lk,
					    const struct fp_sock_key *key, __u64 netns)
{
	lk->netns = netns;
	__builtin_memcpy(lk->ip, key->local_ip, sizeof(lk->ip));
	lk->port = key->local_port;
}

/*
 * Whether the passive side of a connection may join: its listener does not block (accept4 with
 * SOCK_NONBLOCK, as event-loop servers do). Looked up by the bound address, then the wildcards.
 */
static __always_inline bool fp_listener_nonblocking(const struct fp_sock_key *key, __u64 netns)
{
	struct fp_listener_key lk = {};

	fp_listener_key(&lk, key, netns);
	if (bpf_map_lookup_elem(&sluice_fp_listeners_v1, &lk))
		return true;
	/* ::ffff:0.0.0.0 (IPv4 any) */
	lk.ip[0] = 0;
	lk.ip[1] = 0;
	lk.ip[3] = 0;
	if (bpf_map_lookup_elem(&sluice_fp_listeners_v1, &lk))
		return true;
	/* :: (IPv6 any, dual stack) */
	lk.ip[2] = 0;
	return bpf_map_lookup_elem(&sluice_fp_listeners_v1, &lk) != NULL;
}

/* The socket's fast-path state, created on first use (NULL without a socket or memory). */
static __always_inline struct fp_sock_state *fp_ops_state(struct bpf_sock_ops *ops)
{
	struct bpf_sock *sk = ops->sk;

	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&sluice_fp_state_v2, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
}

/* Whether the socket behind a sock_ops callback blocks (FP_SOCK_*). */
static __always_inline int fp_ops_blocking(struct bpf_sock_ops *ops)
{
	struct bpf_sock *sk = ops->sk;

	if (!sk)
		return FP_SOCK_NO_FILE;
	return fp_tcp_sock_blocking(bpf_skc_to_tcp_sock(sk));
}

/* The connection's shared record by its canonical key, created on first use; NULL when full. */
static __always_inline struct fp_conn *fp_conn_by_canonical(const struct fp_sock_key *key)
{
	struct fp_conn fresh = {};
	struct fp_conn *conn;

	conn = bpf_map_lookup_elem(&sluice_fp_conns_v2, key);
	if (conn)
		return conn;
	bpf_map_update_elem(&sluice_fp_conns_v2, key, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&sluice_fp_conns_v2, key);
}

/* The record of the connection `own` (a side's own key) belongs to, and which half is `own`'s. */
static __always_inline void fp_conn_key(const struct fp_sock_key *own, struct fp_sock_key *canon,
					bool *canonical)
{
	*canonical = fp_key_is_canonical(own);
	if (*canonical)
		__builtin_memcpy(canon, own, sizeof(*canon));
	else
		fp_key_reverse(own, canon);
}

/*
 * The connection's shared record; `own` is the calling side's key, `canonical` tells which half of
 * the record is its own. NULL when the map is full.
 */
static __always_inline struct fp_conn *fp_conn_get(const struct fp_sock_key *own, bool *canonical)
{
	struct fp_sock_key key = {};

	fp_conn_key(own, &key, canonical);
	return fp_conn_by_canonical(&key);
}

/* A side joining the sockhash writes where it is into its half of the connection's record. */
static __always_inline long fp_conn_join(const struct fp_sock_key *own, __u64 sk, __u64 state)
{
	struct fp_sock_key key = {};
	struct fp_conn fresh = {};
	struct fp_conn *conn;
	bool canonical;

	fp_conn_key(own, &key, &canonical);
	if (canonical) {
		fresh.sk0 = sk;
		fresh.state0 = state;
	} else {
		fresh.sk1 = sk;
		fresh.state1 = state;
	}
	/* The first side creates the record; the second finds it and fills in its half. */
	if (!bpf_map_update_elem(&sluice_fp_conns_v2, &key, &fresh, BPF_NOEXIST))
		return 0;
	conn = bpf_map_lookup_elem(&sluice_fp_conns_v2, &key);
	if (!conn)
		return -1;
	if (canonical) {
		conn->sk0 = sk;
		conn->state0 = state;
	} else {
		conn->sk1 = sk;
		conn->state1 = state;
	}
	return 0;
}

/* Either side closing removes the connection's record (a surviving side that leaves later makes a
 * fresh one, which its own close removes). */
static __always_inline void fp_conn_forget(const struct fp_sock_key *own)
{
	struct fp_sock_key key = {};
	bool canonical;

	fp_conn_key(own, &key, &canonical);
	bpf_map_delete_elem(&sluice_fp_conns_v2, &key);
}

/*
 * A socket whose own sends take the normal path for good leaves the sockhash (so its sends and
 * reads go back to plain TCP, which is faster for what made it fall back), once its peer can no
 * longer redirect to it (claim OPEN->CLOSED wins, or the peer's claim was already CLOSED) and
 * nothing redirected waits unread in its queue. Runs on the ACKs of its normal-path data (RTT
 * callback), never while it only redirects.
 */
static __always_inline void fp_try_leave(struct bpf_sock_ops *ops, struct fp_sock_key *key)
{
	struct fp_sock_state *state;
	struct fp_stats *stats;
	struct fp_conn *conn;
	struct bpf_sock *sk = ops->sk;
	struct tcp_sock *tp;
	struct sk_psock *psock;
	unsigned long data;
	__u64 *peer_claim, old;
	__u32 queued = 0;
	bool canonical;

	if (!sk)
		return;
	state = bpf_sk_storage_get(&sluice_fp_state_v2, sk, NULL, 0);
	if (!state || state->mode != FP_MODE_PASS)
		return;
	conn = fp_conn_get(key, &canonical);
	if (!conn)
		return;
	peer_claim = canonical ? &conn->redir1 : &conn->redir0;
	old = __sync_val_compare_and_swap(peer_claim, FP_REDIR_OPEN, FP_REDIR_CLOSED);
	if (old == FP_REDIR_TAKEN) {
		/* The peer redirects to this socket: it stays. Stop asking on every ACK. */
		bpf_sock_ops_cb_flags_set(ops,
					  ops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RTT_CB_FLAG);
		return;
	}
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	data = (unsigned long)tp->inet_conn.icsk_inet.sk.sk_user_data;
	psock = (struct sk_psock *)(data & FP_SK_USER_DATA_PTRMASK);
	if (psock && bpf_core_read(&queued, sizeof(queued), &psock->msg_tot_len))
		return;
	if (queued)
		return;
	bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RTT_CB_FLAG);
	if (bpf_map_delete_elem(&sluice_fp_socks_v1, key))
		return;
	/* Its peer can never redirect to it now; a peer still undecided finds no one. */
	if (canonical) {
		conn->sk0 = 0;
		conn->state0 = 0;
	} else {
		conn->sk1 = 0;
		conn->state1 = 0;
	}
	stats = fp_stats();
	if (stats)
		stats->left_map++;
}

/* A socket joining the sockhash: undecided, and it knows its peer's key (its own reversed). */
static __always_inline void fp_state_init(struct fp_sock_state *state,
					  const struct fp_sock_key *key)
{
	fp_key_reverse(key, &state->peer);
	state->mode = FP_MODE_UNDECIDED;
	state->flags = fp_key_is_canonical(key) ? FP_STATE_CANONICAL : 0;
	state->peer_sk = 0;
	state->peer_state = 0;
	state->sends = 0;
	state->peer_sends_mark = 0;
	state->streak_bytes = 0;
	state->unread_bound = 0;
	state->streak_msgs = 0;
	state->pad = 0;
}

SEC("sockops")
int fp_sockops(struct bpf_sock_ops *ops)
{
	struct fp_sock_state *state;
	struct fp_sock_key key = {};
	struct fp_config *cfg;
	struct fp_stats *stats;
	bool active;
	long err;

	__u64 netns;

	switch (ops->op) {
	case BPF_SOCK_OPS_STATE_CB:
		/* args[1] is the new state: forget the socket when it closes. */
		if (ops->args[1] == BPF_TCP_CLOSE && !fp_key_from_ops(ops, &key)) {
			struct fp_listener_key lk = {};

			netns = bpf_get_netns_cookie(ops);
			fp_listener_key(&lk, &key, netns);
			if (ops->args[0] == BPF_TCP_LISTEN)
				bpf_map_delete_elem(&sluice_fp_listeners_v1, &lk);
			fp_key_set_netns(&key, netns);
			fp_conn_forget(&key);
		}
		return 1;
	case BPF_SOCK_OPS_RTT_CB:
		if (!fp_key_from_ops(ops, &key)) {
			fp_key_set_netns(&key, bpf_get_netns_cookie(ops));
			fp_try_leave(ops, &key);
		}
		return 1;
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		/* Remember listeners that do not block (and forget them when they close). */
		cfg = fp_config();
		if (!cfg || !cfg->enabled || fp_key_from_ops(ops, &key))
			return 1;
		if (fp_ops_blocking(ops) == FP_SOCK_NONBLOCKING) {
			struct fp_listener_key lk = {};
			__u32 one = 1;

			fp_listener_key(&lk, &key, bpf_get_netns_cookie(ops));
			bpf_map_update_elem(&sluice_fp_listeners_v1, &lk, &one, BPF_ANY);
			bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags |
							   BPF_SOCK_OPS_STATE_CB_FLAG);
		}
		return 1;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		active = true;
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		active = false;
		break;
	default:
		return 1;
	}
	cfg = fp_config();
	if (!cfg || !cfg->enabled)
		return 1;
	if (fp_key_from_ops(ops, &key))
		return 1;
	netns = bpf_get_netns_cookie(ops);
	fp_key_set_netns(&key, netns);
	if (!fp_eligible(cfg, &key, active))
		return 1;
	stats = fp_stats();
	/* Only sockets that do not block: see fp_sock_blocking(). */
	if (!cfg->allow_blocking && (active ? fp_ops_blocking(ops) != FP_SOCK_NONBLOCKING
					    : !fp_listener_nonblocking(&key, netns))) {
		if (stats)
			stats->skipped_blocking++;
		return 1;
	}
	/*
	 * The socket's state exists before it can send through the map (fp_msg never creates it),
	 * so a socket without state never redirects.
	 */
	state = fp_ops_state(ops);
	if (!state) {
		if (stats)
			stats->state_failures++;
		return 1;
	}
	fp_state_init(state, &key);
	err = bpf_sock_hash_update(ops, &sluice_fp_socks_v1, &key, BPF_NOEXIST);
	if (!err) {
		/* Where its peer will find it; without that record it cannot take part. */
		err = fp_conn_join(&key, (__u64)ops->sk, (__u64)state);
		if (err)
			bpf_map_delete_elem(&sluice_fp_socks_v1, &key);
	}
	if (!err) {
		/* STATE: forget it on close. RTT: ACKs of normal-path data, to leave the map. */
		bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags |
						   BPF_SOCK_OPS_STATE_CB_FLAG |
						   BPF_SOCK_OPS_RTT_CB_FLAG);
	}
	if (stats) {
		if (err)
			stats->insert_failures++;
		else
			stats->inserts++;
	}
	return 1;
}

/* Counts a send on the normal path; `reason` is the counter of a direction leaving the fast path,
 * or NULL. */
static __always_inline int fp_pass(struct fp_stats *stats, struct fp_sock_state *state,
				   __u64 *reason, __u32 size)
{
	if (state)
		state->mode = FP_MODE_PASS;
	if (stats) {
		stats->fallback_msgs++;
		stats->fallback_bytes += size;
		if (reason)
			(*reason)++;
	}
	return SK_PASS;
}

/* Why a send takes the normal path (FP_GO: it may redirect). */
enum fp_why {
	FP_GO = 0,
	FP_WHY_NO_PEER,
	FP_WHY_BLOCKING,
	FP_WHY_STREAMING,
	FP_WHY_BACKPRESSURE,
	FP_WHY_STATE,
};

static __always_inline __u64 *fp_why_counter(struct fp_stats *stats, enum fp_why why)
{
	if (!stats)
		return NULL;
	switch (why) {
	case FP_WHY_NO_PEER:
		return &stats->fallback_no_peer;
	case FP_WHY_BLOCKING:
		return &stats->fallback_blocking;
	case FP_WHY_STREAMING:
		return &stats->fallback_streaming;
	case FP_WHY_BACKPRESSURE:
		return &stats->fallback_backpressure;
	case FP_WHY_STATE:
		return &stats->state_failures;
	default:
		return NULL;
	}
}

/*
 * First send of a direction: find the peer once, in the connection's record (its socket and state
 * addresses go into this socket's state). Nothing of the peer is read here: its unread redirected
 * bytes are zero (only this side redirects to it, and it has not yet), and the streak's starting
 * mark of 0 at worst costs one extra streak window when the peer already sent.
 */
static __always_inline struct fp_conn *fp_find_peer(struct fp_sock_state *state)
{
	struct fp_sock_key own = {};
	struct fp_conn *conn;

	if (state->flags & FP_STATE_CANONICAL) {
		fp_key_reverse(&state->peer, &own);
		conn = bpf_map_lookup_elem(&sluice_fp_conns_v2, &own);
		if (!conn)
			return NULL;
		state->peer_sk = conn->sk1;
		state->peer_state = conn->state1;
	} else {
		conn = bpf_map_lookup_elem(&sluice_fp_conns_v2, &state->peer);
		if (!conn)
			return NULL;
		state->peer_sk = conn->sk0;
		state->peer_state = conn->state0;
	}
	/* Both halves written (a peer joining at this moment may have stored only one). */
	return state->peer_sk && state->peer_state ? conn : NULL;
}

/*
 * An accepted peer that turned out to block (a blocking accept() on a non-blocking listener): send
 * it nothing more by redirect (sk_msg may not remove it from the sockhash; see docs/fastpath.md).
 * Checked on every send until the peer has a non-blocking file, then at each checkpoint (the
 * backpressure and streak reads below).
 */
static __always_inline enum fp_why fp_check_peer_file(const struct fp_config *cfg,
						      struct fp_sock_state *state)
{
	int blocking;

	if (cfg->allow_blocking)
		return FP_GO;
	blocking = fp_sock_blocking(state->peer_sk);
	if (blocking == FP_SOCK_BLOCKING)
		return FP_WHY_BLOCKING;
	if (blocking == FP_SOCK_NONBLOCKING)
		state->flags |= FP_STATE_PEER_NONBLOCKING;
	return FP_GO;
}

/*
 * Counts a send of `size` bytes into this side's streak; past the limits, reads the peer's send
 * count: unchanged since the streak began means one-way streaming (where redirect loses to TCP).
 * The peer's count is read only then, so a send costs no shared write. A stream is caught after
 * between one and two times the limits (the streak restarts when the peer is seen to have sent).
 */
static __always_inline enum fp_why fp_check_streak(const struct fp_config *cfg,
						   struct fp_sock_state *state, __u32 size,
						   bool *checkpoint)
{
	long long sends;

	if (!cfg->max_streak_msgs && !cfg->max_streak_bytes)
		return FP_GO;
	/* Streams of large writes win with redirect (bench/fastpath.ts): they never end a streak.
	 */
	if (cfg->streak_exempt_bytes && size >= cfg->streak_exempt_bytes)
		return FP_GO;
	state->streak_msgs++;
	state->streak_bytes += size;
	if ((!cfg->max_streak_msgs || state->streak_msgs <= cfg->max_streak_msgs) &&
	    (!cfg->max_streak_bytes || state->streak_bytes <= cfg->max_streak_bytes))
		return FP_GO;
	sends = fp_peer_sends(state->peer_state);
	if (sends < 0 || (__u64)sends == state->peer_sends_mark)
		return FP_WHY_STREAMING;
	state->peer_sends_mark = (__u64)sends;
	state->streak_msgs = 1;
	state->streak_bytes = size;
	*checkpoint = true;
	return FP_GO;
}

/*
 * Backpressure: redirect only while the peer holds fewer than max_queued_bytes unread. Its queue is
 * read only when the upper bound (last read plus what this side redirected since; only this side
 * redirects to the peer, and reads only lower it) would pass the limit.
 */
static __always_inline enum fp_why fp_check_unread(const struct fp_config *cfg,
						   struct fp_sock_state *state, __u32 size,
						   bool *checkpoint)
{
	long unread;

	if (state->unread_bound + size <= cfg->max_queued_bytes)
		return FP_GO;
	unread = fp_peer_unread_bytes(state->peer_sk);
	if (unread < 0 || (__u64)unread + size > cfg->max_queued_bytes)
		return FP_WHY_BACKPRESSURE;
	state->unread_bound = (__u64)unread;
	*checkpoint = true;
	return FP_GO;
}

/*
 * A side claims the right to redirect once, before its first redirect; a peer that is leaving the
 * sockhash claimed it first (fp_try_leave).
 */
static __always_inline enum fp_why fp_claim_redirect(struct fp_sock_state *state,
						     struct fp_conn *conn)
{
	__u64 *claim = (state->flags & FP_STATE_CANONICAL) ? &conn->redir0 : &conn->redir1;

	if (__sync_val_compare_and_swap(claim, FP_REDIR_OPEN, FP_REDIR_TAKEN) == FP_REDIR_CLOSED)
		return FP_WHY_NO_PEER;
	return FP_GO;
}

/* Every check before a redirect, cheapest and most common first. */
static __always_inline enum fp_why fp_may_redirect(const struct fp_config *cfg,
						   struct fp_sock_state *state, __u32 size)
{
	bool undecided = state->mode == FP_MODE_UNDECIDED, checkpoint = false;
	struct fp_conn *conn = NULL;
	enum fp_why why;

	if (undecided) {
		conn = fp_find_peer(state);
		if (!conn)
			return FP_WHY_NO_PEER;
	}
	why = fp_check_streak(cfg, state, size, &checkpoint);
	if (why)
		return why;
	why = fp_check_unread(cfg, state, size, &checkpoint);
	if (why)
		return why;
	if (undecided || checkpoint || !(state->flags & FP_STATE_PEER_NONBLOCKING)) {
		why = fp_check_peer_file(cfg, state);
		if (why)
			return why;
	}
	return conn ? fp_claim_redirect(state, conn) : FP_GO;
}

SEC("sk_msg")
int fp_msg(struct sk_msg_md *msg)
{
	struct fp_stats *stats = fp_stats();
	struct fp_sock_state *state;
	struct fp_config *cfg;
	enum fp_why why;
	__u32 size = msg->size;

	if (!msg->sk)
		return fp_pass(stats, NULL, NULL, size);
	/* Created when the socket joined the map (fp_sockops); none: it must not redirect. */
	state = bpf_sk_storage_get(&sluice_fp_state_v2, msg->sk, NULL, 0);
	if (!state)
		return fp_pass(stats, NULL, stats ? &stats->state_failures : NULL, size);
	/* On every path: the peer's streak check compares it. */
	state->sends++;
	if (state->mode == FP_MODE_PASS)
		return fp_pass(stats, state, NULL, size);

	cfg = fp_config();
	if (!cfg || !cfg->enabled)
		return fp_pass(stats, state, stats ? &stats->fallback_disabled : NULL, size);
	if (state->mode == FP_MODE_UNDECIDED && cfg->max_msg_bytes && size > cfg->max_msg_bytes)
		return fp_pass(stats, state, stats ? &stats->fallback_policy : NULL, size);
	/*
	 * A sender that blocks (a socket accepted without SOCK_NONBLOCK from a non-blocking
	 * listener, or one that cleared O_NONBLOCK) sends the normal way, so its ACKs let it leave
	 * the sockhash (fp_try_leave) and its blocking reads go back to plain TCP.
	 */
	if (!cfg->allow_blocking &&
	    fp_tcp_sock_blocking(bpf_skc_to_tcp_sock(msg->sk)) == FP_SOCK_BLOCKING)
		return fp_pass(stats, state, stats ? &stats->fallback_blocking : NULL, size);
	why = fp_may_redirect(cfg, state, size);
	if (why)
		return fp_pass(stats, state, fp_why_counter(stats, why), size);
	if (bpf_msg_redirect_hash(msg, &sluice_fp_socks_v1, &state->peer, BPF_F_INGRESS) != SK_PASS)
		return fp_pass(stats, state, stats ? &stats->redirect_errors : NULL, size);
	state->mode = FP_MODE_REDIRECT;
	state->unread_bound += size;
	if (stats) {
		stats->redirected_msgs++;
		stats->redirected_bytes += size;
	}
	return SK_PASS;
}
