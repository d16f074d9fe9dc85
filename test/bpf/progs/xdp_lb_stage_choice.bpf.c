// SPDX-License-Identifier: Apache-2.0
/* Benchmark variant of bpf/xdp_lb.bpf.c that stops after the choice stage (bench/xdp.ts
 * break-down). */
#define XDP_LB_BENCH_STAGE XDP_LB_STAGE_CHOICE
#include "../../../bpf/xdp_lb.bpf.c"
