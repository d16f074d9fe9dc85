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

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the outer headers are assembled as little-endian words"
#endif

/*
 * Packet bytes moved as 16/32-bit words: the verifier checks packet bounds, not alignment (unless a
 * loader asks for strict alignment), and the JIT targets handle unaligned access. Byte arrays would
 * otherwise be copied one byte at a time.
 */
#define XDP_LD16(p)    (*(const __u16 *)(p))
#define XDP_LD32(p)    (*(const __u32 *)(p))
#define XDP_ST16(p, v) (*(__u16 *)(p) = (v))
#define XDP_ST32(p, v) (*(__u32 *)(p) = (v))
#define XDP_ST64(p, v) (*(__u64 *)(p) = (v))

/* What the outer header needs besides the packet: the backend and this node's side. */
struct xdp_encap_args {
	__be32 saddr4;	     /* node's IPv4 source (0: none) */
	__be32 daddr4;	     /* IPv4 backend */
	__u64 saddr6[2];     /* node's IPv6 source (zero: none) */
	__u64 daddr6[2];     /* IPv6 backend */
	__u32 gw_lo;	     /* gateway MAC bytes 0-3 (with gw_hi zero: back to the sender) */
	__u16 gw_hi;	     /* gateway MAC bytes 4-5 */
	__u8 backend_family; /* XDP_LB_AF_INET or XDP_LB_AF_INET6 */
	__u8 pad;
};

/*
 * Writes L2 (turned around) and the outer header into a frame just grown by olen bytes at the
 * front: the client's L2 header now starts at data + olen. l2 and olen are constants after
 * inlining, so every access is at a fixed offset behind one bounds check.
 */
static __always_inline int xdp_write_encap(void *data, void *data_end, int l2, int olen,
					   const struct xdp_lb_pkt *pkt,
					   const struct xdp_encap_args *args)
{
	void *old = data + olen, *ip = data + l2;
	__u8 inner = pkt->family == XDP_LB_AF_INET ? IPPROTO_IPIP : IPPROTO_IPV6;
	__u32 dst_lo = args->gw_lo, src_lo, tag = 0;
	__u16 dst_hi = args->gw_hi, src_hi;

	if (data + l2 + olen > data_end)
		return -EFAULT;
	/* Read the client's L2 before the outer header overwrites its first bytes. */
	if (!(dst_lo | dst_hi)) {
		dst_lo = XDP_LD32(old + 6);
		dst_hi = XDP_LD16(old + 10);
	}
	src_lo = XDP_LD32(old);
	src_hi = XDP_LD16(old + 4);
	if (l2 > (int)sizeof(struct ethhdr))
		tag = XDP_LD32(old + 12); /* TPID and TCI stay */
	XDP_ST32(data, dst_lo);
	XDP_ST16(data + 4, dst_hi);
	XDP_ST32(data + 6, src_lo);
	XDP_ST16(data + 10, src_hi);
	if (l2 > (int)sizeof(struct ethhdr)) {
		XDP_ST32(data + 12, tag);
		XDP_ST16(data + 16, bpf_htons(olen == 20 ? ETH_P_IP : ETH_P_IPV6));
	} else {
		XDP_ST16(data + 12, bpf_htons(olen == 20 ? ETH_P_IP : ETH_P_IPV6));
	}

	if (olen == 20) {
		/* version/IHL, TOS, total length | id 0, no fragment | TTL, protocol, checksum |
		 * addrs */
		__u32 w0 =
		    0x45 | ((__u32)pkt->tos << 8) | ((__u32)bpf_htons(pkt->ip_len + 20) << 16);
		__u32 w2 = XDP_ENCAP_TTL | ((__u32)inner << 8);
		__u32 sum = (w0 & 0xffff) + (w0 >> 16) + w2 + (args->saddr4 & 0xffff) +
			    (args->saddr4 >> 16) + (args->daddr4 & 0xffff) + (args->daddr4 >> 16);

		sum = (sum & 0xffff) + (sum >> 16);
		sum = (sum & 0xffff) + (sum >> 16);
		XDP_ST32(ip, w0);
		XDP_ST32(ip + 4, 0);
		XDP_ST32(ip + 8, w2 | ((~sum & 0xffff) << 16));
		XDP_ST32(ip + 12, args->saddr4);
		XDP_ST32(ip + 16, args->daddr4);
	} else {
		/* version, traffic class, flow label 0 | payload length, next header, hop limit */
		__u32 w0 = 0x60 | (pkt->tos >> 4) | ((__u32)(pkt->tos & 0xf) << 12);
		__u32 w1 = (__u32)bpf_htons(pkt->ip_len) | ((__u32)inner << 16) |
			   ((__u32)XDP_ENCAP_TTL << 24);

		XDP_ST32(ip, w0);
		XDP_ST32(ip + 4, w1);
		XDP_ST64(ip + 8, args->saddr6[0]);
		XDP_ST64(ip + 16, args->saddr6[1]);
		XDP_ST64(ip + 24, args->daddr6[0]);
		XDP_ST64(ip + 32, args->daddr6[1]);
	}
	return 0;
}

/*
 * Prepends the outer header towards the backend: IPv4 (protocol 4 for IPv4 inside, 41 for IPv6) or
 * IPv6 (next header 4 or 41) by the backend's family, from this node's address of that family, with
 * the L2 header kept in front and its MAC addresses turned around (destination: the gateway MAC, or
 * the MAC the packet came from when none is set). Returns -EADDRNOTAVAIL when the node has no
 * source address of the backend's family, -ENOMEM when the frame has no headroom.
 */
static __always_inline int xdp_encap(struct xdp_md *ctx, const struct xdp_lb_pkt *pkt,
				     const struct xdp_encap_args *args)
{
	int v4 = args->backend_family == XDP_LB_AF_INET;
	void *data, *data_end;

	if (v4 ? !args->saddr4 : !(args->saddr6[0] | args->saddr6[1]))
		return -EADDRNOTAVAIL;
	if (bpf_xdp_adjust_head(ctx, v4 ? -20 : -40))
		return -ENOMEM;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (v4)
		return pkt->vlan ? xdp_write_encap(data, data_end, 18, 20, pkt, args)
				 : xdp_write_encap(data, data_end, 14, 20, pkt, args);
	return pkt->vlan ? xdp_write_encap(data, data_end, 18, 40, pkt, args)
			 : xdp_write_encap(data, data_end, 14, 40, pkt, args);
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
