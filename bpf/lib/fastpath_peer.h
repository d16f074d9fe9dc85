/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What the fast path may read of a peer socket found in the sockhash (CO-RE, read only). */
#ifndef SLUICE_FASTPATH_PEER_H
#define SLUICE_FASTPATH_PEER_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include "fastpath.h"

/* sk_user_data carries flag bits below the psock pointer (SK_USER_DATA_NOCOPY | _BPF | _PSOCK). */
#define FP_SK_USER_DATA_PTRMASK (~7UL)

/*
 * Bytes redirected to the peer and not yet read by its application: the psock's ingress message
 * queue (sk_psock.msg_tot_len), read through the peer's struct sock address with probe reads, which
 * cannot fault. Returns -1 when it cannot be read, which callers treat as "over the bound".
 */
static __always_inline long fp_peer_unread_bytes(__u64 peer_addr)
{
	struct sock *sk = (struct sock *)peer_addr;
	struct sk_psock *psock;
	unsigned long data = 0;
	__u32 queued = 0;

	if (bpf_core_read(&data, sizeof(data), &sk->sk_user_data))
		return -1;
	psock = (struct sk_psock *)(data & FP_SK_USER_DATA_PTRMASK);
	if (!psock)
		return -1;
	if (bpf_core_read(&queued, sizeof(queued), &psock->msg_tot_len))
		return -1;
	return (long)queued;
}

/*
 * The peer's count of sends (fp_sock_state.sends), read through the address of its socket storage;
 * -1 when it cannot be read. The streak check only compares it with an earlier value.
 */
static __always_inline long long fp_peer_sends(__u64 peer_state)
{
	struct fp_sock_state *state = (struct fp_sock_state *)peer_state;
	__u64 sends = 0;

	if (!state || bpf_probe_read_kernel(&sends, sizeof(sends), &state->sends))
		return -1;
	return (long long)sends;
}

/* O_NONBLOCK of the generic ABI (x86, arm64): asm-generic/fcntl.h. */
#define FP_O_NONBLOCK 00004000

#define FP_SOCK_NONBLOCKING 0 /* the socket's file is O_NONBLOCK */
#define FP_SOCK_BLOCKING    1 /* the socket's file blocks */
#define FP_SOCK_NO_FILE	    2 /* no file yet (a passive socket not accepted yet) or unreadable */

/*
 * Whether reads on a socket block. A blocking read on a socket in a sockhash can return EAGAIN
 * early on this kernel (tcp_bpf_recvmsg gives up after one wake-up of the socket's wait queue), so
 * the fast path only ever holds non-blocking sockets.
 */
static __always_inline int fp_sock_blocking(__u64 sk_addr)
{
	struct sock *sk = (struct sock *)sk_addr;
	struct socket *sock = NULL;
	struct file *file = NULL;
	unsigned int flags = 0;

	if (bpf_core_read(&sock, sizeof(sock), &sk->sk_socket) || !sock)
		return FP_SOCK_NO_FILE;
	if (bpf_core_read(&file, sizeof(file), &sock->file) || !file)
		return FP_SOCK_NO_FILE;
	if (bpf_core_read(&flags, sizeof(flags), &file->f_flags))
		return FP_SOCK_NO_FILE;
	return (flags & FP_O_NONBLOCK) ? FP_SOCK_NONBLOCKING : FP_SOCK_BLOCKING;
}

/* The same, for a socket the program holds as a BTF pointer (sock_ops:
 * bpf_skc_to_tcp_sock(ops->sk)). */
static __always_inline int fp_tcp_sock_blocking(struct tcp_sock *tp)
{
	struct socket *sock;
	struct file *file;

	if (!tp)
		return FP_SOCK_NO_FILE;
	sock = tp->inet_conn.icsk_inet.sk.sk_socket;
	if (!sock)
		return FP_SOCK_NO_FILE;
	file = sock->file;
	if (!file)
		return FP_SOCK_NO_FILE;
	return (file->f_flags & FP_O_NONBLOCK) ? FP_SOCK_NONBLOCKING : FP_SOCK_BLOCKING;
}

#endif /* SLUICE_FASTPATH_PEER_H */
