// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sock_ops for socket-LB: follows the TCP connections that connect4/6 translated (they carry an
 * lb_sock in socket storage) to keep per-backend active-connection counts for least-connections and
 * to eject failing backends within one failed connect, without a round trip through userspace.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb.h"
#include "lb_maps.h"
#include "lb_select.h"
#include "lb_eject.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("sockops")
int sluice_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct lb_sock *sock;
	__u32 op = skops->op;

	if (!sk)
		return 1;
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	/* Of the state changes only CLOSE matters: skip the storage lookup for the others (three of
	 * the four a short connection makes). */
	if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] != BPF_TCP_CLOSE)
		return 1;
	sock = bpf_sk_storage_get(&sluice_lb_sock_v1, sk, 0, 0);
	if (!sock || !sock->backend_id)
		return 1;
	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* Ask for state changes of this socket only: SYN_SENT -> CLOSE is a failed connect.
		 */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						     BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		lb_connect_established(sock);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (sock->flags & LB_SOCK_F_ACTIVE)
			lb_connection_closed(sock);
		else if (skops->args[0] == BPF_TCP_SYN_SENT)
			lb_connect_failed(sock);
		break;
	}
	return 1;
}
