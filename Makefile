# sluice build. `make setup` prepares a fresh Debian 12 machine (as root) and builds everything;
# `make test` runs the whole suite, privileged BPF tests included.
SHELL := /bin/bash
.DEFAULT_GOAL := build

ARCH        := $(shell uname -m)
BPF_ARCH    := $(patsubst x86_64,x86,$(patsubst aarch64,arm64,$(ARCH)))
CLANG       ?= clang
BPFTOOL     ?= bpftool
NODEDIR     ?= $(shell d=$$(dirname $$(dirname $$(command -v node))); [ -d $$d/include/node ] && echo $$d)
BUILD       := build
BPF_OUT     := $(BUILD)/bpf
BPF_SRCS    := $(wildcard bpf/*.bpf.c)
BPF_OBJS    := $(patsubst bpf/%.bpf.c,$(BPF_OUT)/%.bpf.o,$(BPF_SRCS))
BPF_HDRS    := $(wildcard bpf/include/*.h bpf/lib/*.h)
BPF_CFLAGS  := -target bpf -O2 -g -Wall -Werror -D__TARGET_ARCH_$(BPF_ARCH) \
               -Ibpf/include -Ibpf/lib -I$(BUILD)/include -I/usr/include/$(ARCH)-linux-gnu
BPF_TEST_OUT  := $(BUILD)/bpf-test
BPF_TEST_SRCS := $(wildcard test/bpf/progs/*.bpf.c)
BPF_TEST_OBJS := $(patsubst test/bpf/progs/%.bpf.c,$(BPF_TEST_OUT)/%.bpf.o,$(BPF_TEST_SRCS))
ADDON       := native/build/Release/sluice_bpf.node
ADDON_SRCS  := $(wildcard native/src/*.cc native/src/*.h) native/binding.gyp
TS_STAMP    := dist/.stamp
C_FORMAT    := $(BPF_SRCS) $(BPF_HDRS) $(BPF_TEST_SRCS) $(wildcard native/src/*.cc native/src/*.h)

# Debian packages the build, the tests and the benchmarks need.
APT_PACKAGES := clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool iproute2 clang-format \
                iptables nftables ethtool iperf3 haproxy pkg-config make g++ python3 dnsutils

.PHONY: setup deps bpffs build bpf bpf-test addon ts lint format test test-unit clean demo bench

setup: deps bpffs node_modules/.package-lock.json build

# Installs only what is missing, so a second run is quick.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The agent and the tests pin objects under /sys/fs/bpf; mount bpffs there if nothing has.
bpffs:
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

build: bpf bpf-test addon ts test-helpers

bpf: $(BPF_OBJS)

$(BUILD)/include/vmlinux.h:
	@mkdir -p $(@D)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BPF_OUT)/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS) | $(BUILD)/include/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# Small test-only programs (test/bpf/progs) used by the addon's own tests.
bpf-test: $(BPF_TEST_OBJS)

# (the xdp_lb_stage_* benchmark variants include bpf/xdp_lb.bpf.c itself)
$(BPF_TEST_OUT)/%.bpf.o: test/bpf/progs/%.bpf.c $(BPF_HDRS) bpf/xdp_lb.bpf.c | $(BUILD)/include/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# C helpers for socket tests and benchmarks (blocking-read semantics that Node's sockets cannot show).
test-helpers: $(BUILD)/fastpath-io

$(BUILD)/fastpath-io: test/bpf/fastpath-io.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -pthread -o $@ $<

addon: $(ADDON)

$(ADDON): $(ADDON_SRCS) node_modules/.package-lock.json
	cd native && ../node_modules/.bin/node-gyp rebuild $(if $(NODEDIR),--nodedir=$(NODEDIR)) --loglevel=warn

ts: $(TS_STAMP)

$(TS_STAMP): $(shell find agent controller native test bench -name '*.ts' 2>/dev/null) tsconfig.json node_modules/.package-lock.json
	./node_modules/.bin/tsc -p tsconfig.json
	@touch $@

lint: node_modules/.package-lock.json
	./node_modules/.bin/biome check .
	./node_modules/.bin/tsc -p tsconfig.json --noEmit
	clang-format --dry-run --Werror $(C_FORMAT)

format: node_modules/.package-lock.json
	./node_modules/.bin/biome check --write .
	clang-format -i $(C_FORMAT)

# The whole suite. Privileged tests fail (not skip) when BPF is unusable; SLUICE_SKIP_PRIVILEGED=1 skips them.
test: build bpffs
	./node_modules/.bin/vitest run

test-unit: ts
	SLUICE_SKIP_PRIVILEGED=1 ./node_modules/.bin/vitest run test/unit

clean:
	rm -rf $(BUILD) dist native/build

# A self-contained demo in its own netns: backends, the controller, an agent and a live table (Ctrl-C ends it).
demo: build bpffs
	examples/demo/demo.sh

# Benchmarks (minutes each, bounded; not part of `make test`). Each rewrites its own section of
# docs/benchmarks.md; run one with e.g. `make bench BENCHES=controller`.
BENCHES ?= socket-lb xdp fastpath controller agent-sync health-probes
bench: build bpffs
	@for b in $(BENCHES); do echo "== bench/$$b"; node dist/bench/$$b.js || exit 1; done
