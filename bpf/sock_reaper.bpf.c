// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Stale-socket reaper: a UDP socket iterator that destroys connected UDP sockets whose backend
 * (recorded in their lb_sock record at connect time) has left its service, so an application such
 * as a DNS client gets an error and reconnects through the VIP to a live backend instead of talking
 * to a dead one. bpf_sock_destroy() needs kernel 6.5+; the agent loads this object separately and
 * logs a fallback when the load fails. Each destroyed socket writes one line "<backend id>\n" to
 * the iterator output.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb.h"
#include "lb_maps.h"
#include "lb_sock.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define LB_TCP_ESTABLISHED 1 /* sk_state of a connected UDP socket */

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

SEC("iter/udp")
int sluice_reap_udp(struct bpf_iter__udp *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct udp_sock *udp = ctx->udp_sk;
	struct lb_backend *backend;
	struct lb_sock *sock;
	__u32 backend_id;
	struct sock *sk;

	if (!udp)
		return 0;
	sk = (struct sock *)udp;
	if (sk->__sk_common.skc_state != LB_TCP_ESTABLISHED)
		return 0;
	sock = lb_sock_find(sk, bpf_get_socket_cookie(sk));
	if (!sock || !sock->backend_id)
		return 0;
	backend_id = sock->backend_id;
	backend = bpf_map_lookup_elem(&sluice_lb_backends_v1, &backend_id);
	if (backend && backend->service_id == sock->service_id)
		return 0;
	if (bpf_sock_destroy((struct sock_common *)udp) == 0)
		BPF_SEQ_PRINTF(seq, "%u\n", backend_id);
	return 0;
}

/*
 * The TCP variant (off by default: established TCP connections to a removed backend normally
 * drain): resets established TCP connections whose backend left its service. Same output format.
 */
SEC("iter/tcp")
int sluice_reap_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	struct lb_backend *backend;
	struct tcp_sock *tp;
	struct lb_sock *sock;
	__u32 backend_id;

	if (!skc || skc->skc_state != LB_TCP_ESTABLISHED)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sock = lb_sock_find(tp, bpf_get_socket_cookie(tp));
	if (!sock || !sock->backend_id)
		return 0;
	backend_id = sock->backend_id;
	backend = bpf_map_lookup_elem(&sluice_lb_backends_v1, &backend_id);
	if (backend && backend->service_id == sock->service_id)
		return 0;
	if (bpf_sock_destroy(skc) == 0)
		BPF_SEQ_PRINTF(seq, "%u\n", backend_id);
	return 0;
}
