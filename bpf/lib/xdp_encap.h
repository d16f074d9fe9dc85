/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Encapsulation for direct server return: the client's IP packet is wrapped, unchanged, in an outer
 * IPv4 (protocol 4 for IPv4 inside, 41 for IPv6 inside) or IPv6 header (next header 4 or 41)
 * addressed to the backend, behind the original Ethernet (and VLAN) header with the MAC addresses
 * turned around. The inner packet and its checksums are untouched; the outer IPv4 header gets its
 * own checksum. Also the reverse (xdp_decap) for backends whose kernel has no ipip/ip6tnl device.
 */
#ifndef SLUICE_XDP_ENCAP_H
#define SLUICE_XDP_ENCAP_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "xdp_lb.h"
#include "xdp_parse.h"

#define XDP_ENCAP_TTL 64

static __always_inline __u16 xdp_csum_fold(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

/* The Internet checksum of a 20-byte IPv4 header whose check field is zero. */
static __always_inline __u16 xdp_ipv4_csum(const struct iphdr *ip)
{
	const __u16 *words = (const __u16 *)ip;
	__u32 csum = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		csum += words[i];
	return xdp_csum_fold(csum);
}

static __always_inline int xdp_mac_is_zero(const __u8 *mac)
{
	return (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) == 0;
}

/* The outer header the backend receives. */
struct xdp_outer {
	__u8 family; /* XDP_LB_AF_INET or XDP_LB_AF_INET6 (the backend's family) */
	union {
		struct iphdr v4;
		struct ipv6hdr v6;
	};
};

/*
 * Builds the outer header for pkt towards backend be, from the node's source address for that
 * family. Returns -EADDRNOTAVAIL when the node has no source address of the backend's family.
 */
static __always_inline int xdp_build_outer(struct xdp_outer *out, const struct xdp_lb_pkt *pkt,
					   const struct xdp_backend *be, __be32 saddr4,
					   const __u8 *saddr6)
{
	__u8 inner = pkt->family == XDP_LB_AF_INET ? IPPROTO_IPIP : IPPROTO_IPV6;

	out->family = be->family;
	if (be->family == XDP_LB_AF_INET) {
		struct iphdr *ip = &out->v4;

		if (!saddr4)
			return -EADDRNOTAVAIL;
		__builtin_memset(ip, 0, sizeof(*ip));
		ip->version = 4;
		ip->ihl = 5;
		ip->tos = pkt->tos;
		ip->tot_len = bpf_htons(pkt->ip_len + sizeof(*ip));
		ip->ttl = XDP_ENCAP_TTL;
		ip->protocol = inner;
		ip->saddr = saddr4;
		__builtin_memcpy(&ip->daddr, &be->addr[12], 4);
		ip->check = xdp_ipv4_csum(ip);
		return 0;
	}
	if (be->family == XDP_LB_AF_INET6) {
		struct ipv6hdr *ip6 = &out->v6;
		__u64 *src = (__u64 *)saddr6;

		if (!(src[0] | src[1]))
			return -EADDRNOTAVAIL;
		__builtin_memset(ip6, 0, sizeof(*ip6));
		ip6->version = 6;
		ip6->priority = pkt->tos >> 4;
		ip6->flow_lbl[0] = (pkt->tos & 0xf) << 4;
		ip6->payload_len = bpf_htons(pkt->ip_len);
		ip6->nexthdr = inner;
		ip6->hop_limit = XDP_ENCAP_TTL;
		__builtin_memcpy(&ip6->saddr, saddr6, 16);
		__builtin_memcpy(&ip6->daddr, be->addr, 16);
		return 0;
	}
	return -EAFNOSUPPORT;
}

/* Writes L2 (turned around) and the outer header at the start of a frame that has room for them. */
#define XDP_WRITE_ENCAP(data, data_end, l2_len, eth_old, vlan_old, out, olen, gw_mac, ethertype)   \
	({                                                                                         \
		int __ret = 0;                                                                     \
		struct ethhdr *__eth = (data);                                                     \
		void *__l3 = (void *)__eth + (l2_len);                                             \
		if (__l3 + (olen) > (data_end)) {                                                  \
			__ret = -EFAULT;                                                           \
		} else {                                                                           \
			if (xdp_mac_is_zero(gw_mac))                                               \
				__builtin_memcpy(__eth->h_dest, (eth_old).h_source, ETH_ALEN);     \
			else                                                                       \
				__builtin_memcpy(__eth->h_dest, (gw_mac), ETH_ALEN);               \
			__builtin_memcpy(__eth->h_source, (eth_old).h_dest, ETH_ALEN);             \
			if ((l2_len) > sizeof(struct ethhdr)) {                                    \
				struct xdp_vlan_hdr *__vlan = (void *)(__eth + 1);                 \
				__eth->h_proto = (eth_old).h_proto;                                \
				__vlan->tci = (vlan_old).tci;                                      \
				__vlan->proto = (ethertype);                                       \
			} else {                                                                   \
				__eth->h_proto = (ethertype);                                      \
			}                                                                          \
			__builtin_memcpy(__l3, &(out), (olen));                                    \
		}                                                                                  \
		__ret;                                                                             \
	})

/*
 * Prepends the outer header. gw_mac all zero sends the frame back to the MAC it came from (the
 * router that delivered it); otherwise to gw_mac.
 */
static __always_inline int xdp_encap(struct xdp_md *ctx, const struct xdp_lb_pkt *pkt,
				     const struct xdp_outer *out, const __u8 *gw_mac)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth_old;
	struct xdp_vlan_hdr vlan_old = {};
	__be16 ethertype;
	int olen;

	if (data + sizeof(struct ethhdr) + sizeof(struct xdp_vlan_hdr) > data_end)
		return -EFAULT;
	__builtin_memcpy(&eth_old, data, sizeof(eth_old));
	if (pkt->vlan)
		__builtin_memcpy(&vlan_old, data + sizeof(eth_old), sizeof(vlan_old));

	if (out->family == XDP_LB_AF_INET) {
		olen = sizeof(struct iphdr);
		ethertype = bpf_htons(ETH_P_IP);
	} else {
		olen = sizeof(struct ipv6hdr);
		ethertype = bpf_htons(ETH_P_IPV6);
	}
	if (bpf_xdp_adjust_head(ctx, -olen))
		return -ENOMEM;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	if (out->family == XDP_LB_AF_INET) {
		if (pkt->vlan)
			return XDP_WRITE_ENCAP(data, data_end, 18, eth_old, vlan_old, out->v4,
					       sizeof(struct iphdr), gw_mac, ethertype);
		return XDP_WRITE_ENCAP(data, data_end, 14, eth_old, vlan_old, out->v4,
				       sizeof(struct iphdr), gw_mac, ethertype);
	}
	if (pkt->vlan)
		return XDP_WRITE_ENCAP(data, data_end, 18, eth_old, vlan_old, out->v6,
				       sizeof(struct ipv6hdr), gw_mac, ethertype);
	return XDP_WRITE_ENCAP(data, data_end, 14, eth_old, vlan_old, out->v6,
			       sizeof(struct ipv6hdr), gw_mac, ethertype);
}

/*
 * Removes one outer IPv4/IPv6 header carrying IPv4 (4) or IPv6 (41) — what an ipip/ip6tnl device
 * would do on the backend. Returns -EPROTONOSUPPORT when the frame is not such a tunnel packet.
 */
static __always_inline int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth_old;
	struct xdp_vlan_hdr vlan_old = {};
	struct ethhdr *eth = data;
	void *l3 = eth + 1;
	__be16 proto, inner_type;
	__u8 inner;
	int vlan = 0, olen;

	if ((void *)(eth + 1) > data_end)
		return -ENODATA;
	__builtin_memcpy(&eth_old, eth, sizeof(eth_old));
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct xdp_vlan_hdr *v = l3;

		if ((void *)(v + 1) > data_end)
			return -ENODATA;
		vlan_old = *v;
		proto = v->proto;
		l3 = v + 1;
		vlan = 1;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end)
			return -ENODATA;
		if (ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
			return -EPROTONOSUPPORT;
		inner = ip->protocol;
		olen = sizeof(*ip);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			return -ENODATA;
		inner = ip6->nexthdr;
		olen = sizeof(*ip6);
	} else {
		return -EAFNOSUPPORT;
	}
	if (inner == IPPROTO_IPIP)
		inner_type = bpf_htons(ETH_P_IP);
	else if (inner == IPPROTO_IPV6)
		inner_type = bpf_htons(ETH_P_IPV6);
	else
		return -EPROTONOSUPPORT;
	/* Room for at least an inner IPv4 header, so the frame left behind is not a stub. */
	if (l3 + olen + sizeof(struct iphdr) > data_end)
		return -ENODATA;

	if (bpf_xdp_adjust_head(ctx, olen))
		return -ENOMEM;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)eth + sizeof(*eth) + sizeof(vlan_old) > data_end)
		return -EFAULT;
	__builtin_memcpy(eth, &eth_old, sizeof(*eth));
	if (vlan) {
		struct xdp_vlan_hdr *v = (void *)(eth + 1);

		v->tci = vlan_old.tci;
		v->proto = inner_type;
	} else {
		eth->h_proto = inner_type;
	}
	return 0;
}

#endif /* SLUICE_XDP_ENCAP_H */
