// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test-only: a program the verifier must reject (packet read without a bounds check). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int addon_bad(struct xdp_md *ctx)
{
	unsigned char *data = (unsigned char *)(long)ctx->data;

	return data[20] ? XDP_PASS : XDP_DROP;
}
