/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Sockhash keys of the same-node fast path, built from sock_ops and sk_msg contexts. */
#ifndef SLUICE_FASTPATH_KEY_H
#define SLUICE_FASTPATH_KEY_H

#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "fastpath.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#define FP_EAFNOSUPPORT 97

/* ::ffff:a.b.c.d from a network-order IPv4 address. */
static __always_inline void fp_v4_mapped(__u32 out[4], __u32 v4)
{
	out[0] = 0;
	out[1] = 0;
	out[2] = bpf_htonl(0x0000ffff);
	out[3] = v4;
}

/*
 * remote_port in sock_ops and sk_msg contexts holds the network-order port in the upper half of a
 * little-endian word, so bpf_ntohl() of the whole word is the port in host order.
 */
/* The key of the socket behind a sock_ops callback; -EAFNOSUPPORT for anything but IPv4/IPv6. */
static __always_inline int fp_key_from_ops(struct bpf_sock_ops *ops, struct fp_sock_key *key)
{
	__u32 family = ops->family;

	if (family == AF_INET) {
		fp_v4_mapped(key->local_ip, ops->local_ip4);
		fp_v4_mapped(key->remote_ip, ops->remote_ip4);
	} else if (family == AF_INET6) {
		key->local_ip[0] = ops->local_ip6[0];
		key->local_ip[1] = ops->local_ip6[1];
		key->local_ip[2] = ops->local_ip6[2];
		key->local_ip[3] = ops->local_ip6[3];
		key->remote_ip[0] = ops->remote_ip6[0];
		key->remote_ip[1] = ops->remote_ip6[1];
		key->remote_ip[2] = ops->remote_ip6[2];
		key->remote_ip[3] = ops->remote_ip6[3];
	} else {
		return -FP_EAFNOSUPPORT;
	}
	key->local_port = (__u16)ops->local_port;
	key->remote_port = (__u16)bpf_ntohl(ops->remote_port);
	return 0;
}

/* The key under which the PEER of the sending socket is stored: the sender's tuple reversed. */
static __always_inline int fp_peer_key_from_msg(struct sk_msg_md *msg, struct fp_sock_key *key)
{
	__u32 family = msg->family;

	if (family == AF_INET) {
		fp_v4_mapped(key->local_ip, msg->remote_ip4);
		fp_v4_mapped(key->remote_ip, msg->local_ip4);
	} else if (family == AF_INET6) {
		key->local_ip[0] = msg->remote_ip6[0];
		key->local_ip[1] = msg->remote_ip6[1];
		key->local_ip[2] = msg->remote_ip6[2];
		key->local_ip[3] = msg->remote_ip6[3];
		key->remote_ip[0] = msg->local_ip6[0];
		key->remote_ip[1] = msg->local_ip6[1];
		key->remote_ip[2] = msg->local_ip6[2];
		key->remote_ip[3] = msg->local_ip6[3];
	} else {
		return -FP_EAFNOSUPPORT;
	}
	key->local_port = (__u16)bpf_ntohl(msg->remote_port);
	key->remote_port = (__u16)msg->local_port;
	return 0;
}

/* True for 127.0.0.0/8 and ::1 (and their v4-mapped forms). */
static __always_inline bool fp_is_loopback(const __u32 ip[4])
{
	if (ip[0] != 0 || ip[1] != 0)
		return false;
	if (ip[2] == bpf_htonl(0x0000ffff))
		return (bpf_ntohl(ip[3]) >> 24) == 127;
	return ip[2] == 0 && ip[3] == bpf_htonl(1);
}

/*
 * Both ends on this node as far as the addresses tell: loopback, or the same address on both sides.
 * Such tuples are only unique within a network namespace, so their keys carry the netns cookie.
 */
static __always_inline bool fp_addresses_local(const struct fp_sock_key *key)
{
	if (fp_is_loopback(key->remote_ip) || fp_is_loopback(key->local_ip))
		return true;
	return key->local_ip[0] == key->remote_ip[0] && key->local_ip[1] == key->remote_ip[1] &&
	       key->local_ip[2] == key->remote_ip[2] && key->local_ip[3] == key->remote_ip[3];
}

/* Sets the netns part of a key whose addresses are filled in. */
static __always_inline void fp_key_set_netns(struct fp_sock_key *key, __u64 cookie)
{
	key->netns = fp_addresses_local(key) ? cookie : 0;
}

/*
 * True when `key` (a socket's own key) is the canonical key of its connection: the side whose local
 * port is lower, or with equal ports the lower local address. Both sides agree on it.
 */
static __always_inline bool fp_key_is_canonical(const struct fp_sock_key *key)
{
	if (key->local_port != key->remote_port)
		return key->local_port < key->remote_port;
	if (key->local_ip[0] != key->remote_ip[0])
		return bpf_ntohl(key->local_ip[0]) < bpf_ntohl(key->remote_ip[0]);
	if (key->local_ip[1] != key->remote_ip[1])
		return bpf_ntohl(key->local_ip[1]) < bpf_ntohl(key->remote_ip[1]);
	if (key->local_ip[2] != key->remote_ip[2])
		return bpf_ntohl(key->local_ip[2]) < bpf_ntohl(key->remote_ip[2]);
	return bpf_ntohl(key->local_ip[3]) <= bpf_ntohl(key->remote_ip[3]);
}

/* The same connection seen from the other side. */
static __always_inline void fp_key_reverse(const struct fp_sock_key *in, struct fp_sock_key *out)
{
	out->netns = in->netns;
	__builtin_memcpy(out->local_ip, in->remote_ip, sizeof(out->local_ip));
	__builtin_memcpy(out->remote_ip, in->local_ip, sizeof(out->remote_ip));
	out->local_port = in->remote_port;
	out->remote_port = in->local_port;
	out->pad = 0;
}

#endif /* SLUICE_FASTPATH_KEY_H */
