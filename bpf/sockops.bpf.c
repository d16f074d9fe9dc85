// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sock_ops for socket-LB: follows the TCP connections that connect4/6 translated (they carry an
 * lb_sock record, bpf/lib/lb_sock.h) while they connect. Established, a connection counts as one of
 * its backend's active connections (least-connections) until the application closes it
 * (cgroup/sock_release in sock_lb.bpf.c); a failed connect counts towards ejecting the backend,
 * within that one connect, without a round trip through userspace.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb.h"
#include "lb_maps.h"
#include "lb_select.h"
#include "lb_eject.h"
#include "lb_sock.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("sockops")
int sluice_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct lb_sock *sock;
	__u32 op = skops->op;
	__u64 cookie;

	if (!sk)
		return 1;
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	/* Of the state changes only CLOSE matters: skip the storage lookup for the others (three of
	 * the four a short connection makes). */
	if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] != BPF_TCP_CLOSE)
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	sock = lb_sock_find(sk, cookie);
	if (!sock || !sock->backend_id)
		return 1;
	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* Ask for this socket's state changes while it connects: SYN_SENT -> CLOSE is a
		 * failed connect. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						     BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		lb_connect_established(sock);
		/* Connected: the rest of its life ends at cgroup/sock_release (the application's
		 * close), so its three or four state changes to come run nothing. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags &
						     ~BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (sock->flags & LB_SOCK_F_ACTIVE)
			lb_connection_closed(sock);
		else if (skops->args[0] == BPF_TCP_SYN_SENT)
			lb_connect_failed(sock);
		/* The connect is over: its table entry is free for the next socket. */
		lb_sock_release(cookie);
		break;
	}
	return 1;
}
