/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Packet parsing for the XDP load balancer: Ethernet with at most one VLAN tag, IPv4 or IPv6, TCP
 * or UDP. Every access is bounds-checked against data_end first; helpers return 0 or -errno and the
 * entry point turns the errno into a verdict: -EAFNOSUPPORT     not IPv4/IPv6 (ARP, stacked VLAN
 * tags, ...) -ENODATA          a header, or the length the IP header declares, runs past the end of
 * the frame -EINVAL           malformed IP header (version, header length, total length) -EAGAIN an
 * IP fragment (left to the stack's reassembly) -EPROTONOSUPPORT  neither TCP nor UDP (ICMP, IPv6
 * extension headers, ...)
 */
#ifndef SLUICE_XDP_PARSE_H
#define SLUICE_XDP_PARSE_H

#include <linux/types.h>
#include <linux/errno.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "xdp_lb.h"

#ifndef IP_MF
#define IP_MF 0x2000
#endif
#ifndef IP_OFFSET
#define IP_OFFSET 0x1fff
#endif
#define XDP_IPV6_FRAGMENT 44
#define XDP_TCP_SYN	  0x02
#define XDP_TCP_ACK	  0x10

struct xdp_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* What the parser learned about a packet. */
struct xdp_lb_pkt {
	/* 5-tuple (also the connection-table key); 8-aligned: compared as 64-bit words */
	struct xdp_flow_key key __attribute__((aligned(8)));
	__u32 ip_len; /* IP packet length as its header declares (header + payload) */
	__u8 vlan;    /* 1 when one 802.1Q/802.1ad tag follows the MAC addresses */
	__u8 family;  /* XDP_LB_AF_INET or XDP_LB_AF_INET6 */
	__u8 tos;     /* IPv4 TOS / IPv6 traffic class, copied to the outer header */
	__u8 syn;     /* 1 for a TCP SYN without ACK (always a fresh choice) */
};

static __always_inline int xdp_parse_l4(void *l4, void *data_end, __u8 proto, __u32 room,
					struct xdp_lb_pkt *pkt)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return -ENODATA;
		if (room < sizeof(*tcp) || tcp->doff < 5)
			return -EINVAL;
		pkt->syn = tcp->syn && !tcp->ack;
		pkt->key.sport = tcp->source;
		pkt->key.dport = tcp->dest;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return -ENODATA;
		if (room < sizeof(*udp))
			return -EINVAL;
		pkt->key.sport = udp->source;
		pkt->key.dport = udp->dest;
	} else {
		return -EPROTONOSUPPORT;
	}
	pkt->key.proto = proto;
	return 0;
}

static __always_inline int xdp_parse_ipv4(struct iphdr *ip, void *data_end, struct xdp_lb_pkt *pkt)
{
	__u32 hlen, tot;

	if ((void *)(ip + 1) > data_end)
		return -ENODATA;
	if (ip->version != 4 || ip->ihl < 5)
		return -EINVAL;
	hlen = ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	if (tot < hlen)
		return -EINVAL;
	if ((void *)ip + tot > data_end)
		return -ENODATA;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return -EAGAIN;
	pkt->family = XDP_LB_AF_INET;
	pkt->tos = ip->tos;
	pkt->ip_len = tot;
	pkt->key.saddr[10] = 0xff;
	pkt->key.saddr[11] = 0xff;
	__builtin_memcpy(&pkt->key.saddr[12], &ip->saddr, 4);
	pkt->key.daddr[10] = 0xff;
	pkt->key.daddr[11] = 0xff;
	__builtin_memcpy(&pkt->key.daddr[12], &ip->daddr, 4);
	return xdp_parse_l4((void *)ip + hlen, data_end, ip->protocol, tot - hlen, pkt);
}

static __always_inline int xdp_parse_ipv6(struct ipv6hdr *ip6, void *data_end,
					  struct xdp_lb_pkt *pkt)
{
	__u32 plen;

	if ((void *)(ip6 + 1) > data_end)
		return -ENODATA;
	if (ip6->version != 6)
		return -EINVAL;
	plen = bpf_ntohs(ip6->payload_len);
	if ((void *)(ip6 + 1) + plen > data_end)
		return -ENODATA;
	if (ip6->nexthdr == XDP_IPV6_FRAGMENT)
		return -EAGAIN;
	pkt->family = XDP_LB_AF_INET6;
	pkt->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	pkt->ip_len = sizeof(*ip6) + plen;
	__builtin_memcpy(pkt->key.saddr, &ip6->saddr, 16);
	__builtin_memcpy(pkt->key.daddr, &ip6->daddr, 16);
	return xdp_parse_l4(ip6 + 1, data_end, ip6->nexthdr, plen, pkt);
}

/* Parses a frame into pkt (whose key must be zeroed). */
static __always_inline int xdp_lb_parse(void *data, void *data_end, struct xdp_lb_pkt *pkt)
{
	struct ethhdr *eth = data;
	void *l3 = eth + 1;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return -ENODATA;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct xdp_vlan_hdr *vlan = l3;

		if ((void *)(vlan + 1) > data_end)
			return -ENODATA;
		proto = vlan->proto;
		l3 = vlan + 1;
		pkt->vlan = 1;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return xdp_parse_ipv4(l3, data_end, pkt);
	if (proto == bpf_htons(ETH_P_IPV6))
		return xdp_parse_ipv6(l3, data_end, pkt);
	return -EAFNOSUPPORT;
}

#endif /* SLUICE_XDP_PARSE_H */
