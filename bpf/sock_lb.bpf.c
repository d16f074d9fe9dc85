// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket load balancing at the cgroup socket hooks. connect4/6 (TCP and connected UDP) and
 * sendmsg4/6 (unconnected UDP) rewrite a service VIP to a backend chosen by the service's policy
 * before any packet exists; getpeername4/6 and recvmsg4/6 show the VIP again to the application. A
 * service with no usable backend fails connect()/sendmsg() with ECONNREFUSED; nothing is ever sent
 * toward the VIP itself.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb.h"
#include "lb_maps.h"
#include "lb_select.h"
#include "lb_eject.h"
#include "lb_sock.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Record the VIP and backend on each translated socket (getpeername, sockops, reaper). 0 exists
 * only to measure what the record costs (bench/socket-lb.ts): it breaks getpeername, ejection and
 * the reaper.
 */
const volatile __u8 lb_sock_storage = 1;

/*
 * Where a translated socket goes. A view of either backend layout: lb_backend (the backend map) and
 * lb_inline_backend (a slot inside an inline service record) both begin with these two fields.
 */
struct lb_target {
	__u8 addr[16];
	__be16 port;
};
_Static_assert(__builtin_offsetof(struct lb_backend, port) ==
		   __builtin_offsetof(struct lb_target, port),
	       "lb_backend must begin like lb_target");
_Static_assert(__builtin_offsetof(struct lb_inline_backend, port) ==
		   __builtin_offsetof(struct lb_target, port),
	       "lb_inline_backend must begin like lb_target");

/* The inline slot holding backend_id, or NULL (an affinity pick may be outside the live slots). */
static __always_inline const struct lb_target *lb_inline_target(const struct lb_service *svc,
								__u32 backend_id)
{
#pragma unroll
	for (__u32 k = 0; k < LB_INLINE_BACKENDS; k++) {
		if (k < svc->slot_count && svc->inline_slots[k].id == backend_id)
			return (const struct lb_target *)&svc->inline_slots[k];
	}
	return 0;
}

/*
 * Picks the backend for the service behind key. Returns its id, -ENOENT when key is no service,
 * -ECONNREFUSED when the service has no usable backend. *target_out is where it is.
 */
static __always_inline int lb_translate(void *ctx, const struct lb_service_key *key,
					__u32 *service_id, const struct lb_target **target_out)
{
	const struct lb_target *target = 0;
	struct lb_service *svc;
	__u64 now = 0, cookie = 0;
	__u32 backend_id = 0;

	svc = bpf_map_lookup_elem(&sluice_lb_services_v2, key);
	if (!svc)
		return -ENOENT;
	*service_id = svc->id;
	if (svc->flags & LB_SVC_F_AFFINITY) {
		cookie = bpf_get_netns_cookie(ctx);
		backend_id = lb_affinity_get(svc, cookie, &now);
	}
	if (!backend_id) {
		backend_id = lb_pick(svc, &now);
		if (backend_id && (svc->flags & LB_SVC_F_AFFINITY)) {
			if (!now)
				now = bpf_ktime_get_ns();
			lb_affinity_put(svc, cookie, backend_id, now);
		}
	}
	if (!backend_id)
		goto refuse;
	if (svc->flags & LB_SVC_F_INLINE)
		target = lb_inline_target(svc, backend_id);
	if (!target)
		target = bpf_map_lookup_elem(&sluice_lb_backends_v1, &backend_id);
	if (!target)
		goto refuse;
	/* An IPv4 VIP only has IPv4 backends and an IPv6 VIP only IPv6 ones (the agent checks). */
	if (lb_addr_is_v4(target->addr) != lb_addr_is_v4(key->addr))
		goto refuse;
	lb_count_connect(backend_id);
	*target_out = target;
	return backend_id;
refuse:
	lb_count_no_backend(svc->id);
	return -ECONNREFUSED;
}

/* Remembers the VIP and the backend on the socket for getpeername, sockops and the reaper. */
static __always_inline void lb_sock_remember(struct bpf_sock_addr *ctx,
					     const struct lb_service_key *key, __u32 service_id,
					     __u32 backend_id)
{
	struct bpf_sock *sk = ctx->sk;
	struct lb_sock *sock;

	if (!sk)
		return;
	/* Only a UDP socket connects again while it holds a record (TCP gets one connect). */
	sock = lb_sock_claim(sk, bpf_get_socket_cookie(ctx), key->proto == IPPROTO_UDP);
	if (!sock)
		return;
	lb_addr_copy(sock->addr, key->addr);
	sock->port = key->port;
	sock->proto = key->proto;
	sock->flags = 0;
	sock->service_id = service_id;
	sock->backend_id = backend_id;
}

/* A UDP socket connected elsewhere forgets an earlier VIP. */
static __always_inline void lb_sock_forget(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	lb_sock_release(bpf_get_socket_cookie(ctx));
	if (sk)
		bpf_sk_storage_delete(&sluice_lb_sock_v1, sk);
}

/* Remembers, for UDP replies, which VIP this socket reached a backend through. */
static __always_inline void lb_revnat_put(struct bpf_sock_addr *ctx,
					  const struct lb_service_key *key,
					  const struct lb_target *backend)
{
	struct lb_revnat_key rkey = {};
	struct lb_revnat value = {};
	struct lb_revnat *old;

	rkey.cookie = bpf_get_socket_cookie(ctx);
	lb_addr_copy(rkey.addr, backend->addr);
	rkey.port = backend->port;
	old = bpf_map_lookup_elem(&sluice_lb_udp_revnat_v1, &rkey);
	if (old && old->port == key->port && lb_addr_equal(old->addr, key->addr))
		return;
	lb_addr_copy(value.addr, key->addr);
	value.port = key->port;
	bpf_map_update_elem(&sluice_lb_udp_revnat_v1, &rkey, &value, BPF_ANY);
}

enum lb_hook {
	LB_HOOK_CONNECT,
	LB_HOOK_SENDMSG,
};

/* Common part of connect and sendmsg: 1 allow (translated or not ours), 0 refuse (errno set). */
static __always_inline int lb_sock_addr(struct bpf_sock_addr *ctx, struct lb_service_key *key,
					enum lb_hook hook, const struct lb_target **backend)
{
	__u32 service_id = 0;
	int backend_id;

	if (key->proto != IPPROTO_TCP && key->proto != IPPROTO_UDP)
		return 1;
	backend_id = lb_translate(ctx, key, &service_id, backend);
	if (backend_id == -ENOENT) {
		if (hook == LB_HOOK_CONNECT && key->proto == IPPROTO_UDP)
			lb_sock_forget(ctx);
		*backend = 0;
		return 1;
	}
	if (backend_id < 0) {
		bpf_set_retval(backend_id);
		return 0;
	}
	if (hook == LB_HOOK_CONNECT && lb_sock_storage)
		lb_sock_remember(ctx, key, service_id, backend_id);
	if (key->proto == IPPROTO_UDP)
		lb_revnat_put(ctx, key, *backend);
	return 1;
}

static __always_inline int lb_sock_addr4(struct bpf_sock_addr *ctx, enum lb_hook hook)
{
	struct lb_service_key key __attribute__((aligned(8))) = {};
	const struct lb_target *backend = 0;
	__u32 port = ctx->user_port;
	int verdict;

	lb_addr_set_v4(key.addr, ctx->user_ip4);
	key.port = (__be16)port;
	key.proto = ctx->protocol;
	verdict = lb_sock_addr(ctx, &key, hook, &backend);
	if (verdict && backend) {
		ctx->user_ip4 = ((const __u32 *)backend->addr)[3];
		ctx->user_port = backend->port;
	}
	return verdict;
}

static __always_inline int lb_sock_addr6(struct bpf_sock_addr *ctx, enum lb_hook hook)
{
	struct lb_service_key key __attribute__((aligned(8))) = {};
	const struct lb_target *backend = 0;
	__u32 *w = (__u32 *)key.addr;
	__u32 port = ctx->user_port;
	int verdict;

	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	key.port = (__be16)port;
	key.proto = ctx->protocol;
	verdict = lb_sock_addr(ctx, &key, hook, &backend);
	if (verdict && backend) {
		const __u32 *b = (const __u32 *)backend->addr;

		ctx->user_ip6[0] = b[0];
		ctx->user_ip6[1] = b[1];
		ctx->user_ip6[2] = b[2];
		ctx->user_ip6[3] = b[3];
		ctx->user_port = backend->port;
	}
	return verdict;
}

SEC("cgroup/connect4")
int sluice_connect4(struct bpf_sock_addr *ctx)
{
	return lb_sock_addr4(ctx, LB_HOOK_CONNECT);
}

SEC("cgroup/connect6")
int sluice_connect6(struct bpf_sock_addr *ctx)
{
	return lb_sock_addr6(ctx, LB_HOOK_CONNECT);
}

SEC("cgroup/sendmsg4")
int sluice_sendmsg4(struct bpf_sock_addr *ctx)
{
	return lb_sock_addr4(ctx, LB_HOOK_SENDMSG);
}

SEC("cgroup/sendmsg6")
int sluice_sendmsg6(struct bpf_sock_addr *ctx)
{
	return lb_sock_addr6(ctx, LB_HOOK_SENDMSG);
}

/* The VIP behind a reply from a backend to this socket, or NULL. */
static __always_inline struct lb_revnat *lb_revnat_get(struct bpf_sock_addr *ctx, __u8 *addr)
{
	struct lb_revnat_key key __attribute__((aligned(8))) = {};
	__u32 port = ctx->user_port;

	key.cookie = bpf_get_socket_cookie(ctx);
	lb_addr_copy(key.addr, addr);
	key.port = (__be16)port;
	return bpf_map_lookup_elem(&sluice_lb_udp_revnat_v1, &key);
}

SEC("cgroup/recvmsg4")
int sluice_recvmsg4(struct bpf_sock_addr *ctx)
{
	__u8 addr[16] __attribute__((aligned(8)));
	struct lb_revnat *vip;

	lb_addr_set_v4(addr, ctx->user_ip4);
	vip = lb_revnat_get(ctx, addr);
	if (vip && lb_addr_is_v4(vip->addr)) {
		ctx->user_ip4 = ((const __u32 *)vip->addr)[3];
		ctx->user_port = vip->port;
	}
	return 1;
}

SEC("cgroup/recvmsg6")
int sluice_recvmsg6(struct bpf_sock_addr *ctx)
{
	__u8 addr[16] __attribute__((aligned(8)));
	__u32 *w = (__u32 *)addr;
	struct lb_revnat *vip;

	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	vip = lb_revnat_get(ctx, addr);
	if (vip) {
		const __u32 *v = (const __u32 *)vip->addr;

		ctx->user_ip6[0] = v[0];
		ctx->user_ip6[1] = v[1];
		ctx->user_ip6[2] = v[2];
		ctx->user_ip6[3] = v[3];
		ctx->user_port = vip->port;
	}
	return 1;
}

static __always_inline struct lb_sock *lb_sock_get(struct bpf_sock_addr *ctx)
{
	return lb_sock_find(ctx->sk, bpf_get_socket_cookie(ctx));
}

SEC("cgroup/getpeername4")
int sluice_getpeername4(struct bpf_sock_addr *ctx)
{
	struct lb_sock *sock = lb_sock_get(ctx);

	if (sock && lb_addr_is_v4(sock->addr)) {
		ctx->user_ip4 = ((const __u32 *)sock->addr)[3];
		ctx->user_port = sock->port;
	}
	return 1;
}

SEC("cgroup/getpeername6")
int sluice_getpeername6(struct bpf_sock_addr *ctx)
{
	struct lb_sock *sock = lb_sock_get(ctx);

	if (sock) {
		const __u32 *v = (const __u32 *)sock->addr;

		ctx->user_ip6[0] = v[0];
		ctx->user_ip6[1] = v[1];
		ctx->user_ip6[2] = v[2];
		ctx->user_ip6[3] = v[3];
		ctx->user_port = sock->port;
	}
	return 1;
}

/*
 * The end of a socket's record, when the application closes it. A TCP connect still in flight ends
 * in sockops instead (SYN_SENT -> CLOSE counts a failure there); an established connection stops
 * counting as active here, whatever state TCP is in.
 */
SEC("cgroup/sock_release")
int sluice_sock_release(struct bpf_sock *sk)
{
	struct lb_sock_slot *slot;
	struct lb_sock *sock;
	__u64 cookie;

	if (sk->protocol != IPPROTO_TCP && sk->protocol != IPPROTO_UDP)
		return 1;
	if (sk->protocol == IPPROTO_TCP && sk->state == BPF_TCP_SYN_SENT)
		return 1;
	cookie = bpf_get_socket_cookie(sk);
	slot = lb_sock_slot_find(cookie);
	if (sk->protocol == IPPROTO_TCP) {
		sock = slot ? &slot->sock : bpf_sk_storage_get(&sluice_lb_sock_v1, sk, 0, 0);
		if (sock && (sock->flags & LB_SOCK_F_ACTIVE))
			lb_connection_closed(sock);
	}
	/* A UDP socket connected to several VIPs in turn holds one entry: the one found. */
	if (slot)
		slot->cookie = 0;
	return 1;
}
