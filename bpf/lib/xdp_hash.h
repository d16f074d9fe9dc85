/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The seeded flow hash that indexes Maglev tables: Bob Jenkins' lookup3 as in the kernel's
 * include/linux/jhash.h. agent/xdp/flow-hash.ts computes the same value, so userspace (and every
 * node with the same seed) knows which backend a flow gets. Words are the packet bytes read as host
 * (little-endian) 32-bit loads.
 */
#ifndef SLUICE_XDP_HASH_H
#define SLUICE_XDP_HASH_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define XDP_JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 xdp_rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

#define __xdp_jhash_mix(a, b, c)                                                                   \
	{                                                                                          \
		a -= c;                                                                            \
		a ^= xdp_rol32(c, 4);                                                              \
		c += b;                                                                            \
		b -= a;                                                                            \
		b ^= xdp_rol32(a, 6);                                                              \
		a += c;                                                                            \
		c -= b;                                                                            \
		c ^= xdp_rol32(b, 8);                                                              \
		b += a;                                                                            \
		a -= c;                                                                            \
		a ^= xdp_rol32(c, 16);                                                             \
		c += b;                                                                            \
		b -= a;                                                                            \
		b ^= xdp_rol32(a, 19);                                                             \
		a += c;                                                                            \
		c -= b;                                                                            \
		c ^= xdp_rol32(b, 4);                                                              \
		b += a;                                                                            \
	}

#define __xdp_jhash_final(a, b, c)                                                                 \
	{                                                                                          \
		c ^= b;                                                                            \
		c -= xdp_rol32(b, 14);                                                             \
		a ^= c;                                                                            \
		a -= xdp_rol32(c, 11);                                                             \
		b ^= a;                                                                            \
		b -= xdp_rol32(a, 25);                                                             \
		c ^= b;                                                                            \
		c -= xdp_rol32(b, 16);                                                             \
		a ^= c;                                                                            \
		a -= xdp_rol32(c, 4);                                                              \
		b ^= a;                                                                            \
		b -= xdp_rol32(a, 14);                                                             \
		c ^= b;                                                                            \
		c -= xdp_rol32(b, 24);                                                             \
	}

/* jhash_3words(a, b, c, initval) of the kernel. */
static __always_inline __u32 xdp_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	a += XDP_JHASH_INITVAL + (3 << 2) + initval;
	b += XDP_JHASH_INITVAL + (3 << 2) + initval;
	c += XDP_JHASH_INITVAL + (3 << 2) + initval;
	__xdp_jhash_final(a, b, c);
	return c;
}

/* jhash2(k, 4, initval) of the kernel: one IPv6 address. */
static __always_inline __u32 xdp_jhash_4words(const __u32 *k, __u32 initval)
{
	__u32 a, b, c;

	a = b = c = XDP_JHASH_INITVAL + (4 << 2) + initval;
	a += k[0];
	b += k[1];
	c += k[2];
	__xdp_jhash_mix(a, b, c);
	a += k[3];
	__xdp_jhash_final(a, b, c);
	return c;
}

/*
 * The flow hash. IPv4: jhash_3words(saddr, daddr, ports, seed + proto). IPv6: each address first
 * folds to one word with jhash2(addr, 4, seed), then the same jhash_3words. `ports` is the 4 bytes
 * sport,dport of the L4 header read as one word.
 */
static __always_inline __u32 xdp_flow_hash_v4(__u32 saddr, __u32 daddr, __u32 ports, __u8 proto,
					      __u32 seed)
{
	return xdp_jhash_3words(saddr, daddr, ports, seed + proto);
}

static __always_inline __u32 xdp_flow_hash_v6(const __u32 *saddr, const __u32 *daddr, __u32 ports,
					      __u8 proto, __u32 seed)
{
	return xdp_jhash_3words(xdp_jhash_4words(saddr, seed), xdp_jhash_4words(daddr, seed), ports,
				seed + proto);
}

#endif /* SLUICE_XDP_HASH_H */
