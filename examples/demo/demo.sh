#!/usr/bin/env bash
# `make demo`: a self-contained sluice demo. In a network namespace of its own (only lo, no route out)
# it starts three backends, the controller and an agent attached to a fresh cgroup, then runs a client in
# that cgroup and draws a live table of where its connections to the VIP go, with sluicectl's view of the
# kernel maps below. Ctrl-C (or the end of SLUICE_DEMO_SECONDS) removes everything it made.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SECONDS_TO_RUN="${SLUICE_DEMO_SECONDS:-0}"   # 0 = until Ctrl-C
VIP=10.96.0.10
ID="sluice-demo-$$"
NETNS="$ID"
CGROUP_ROOT="$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)"
CGROUP="$CGROUP_ROOT/$ID"
BPFFS="/sys/fs/bpf/$ID"
WORK="$(mktemp -d "/tmp/$ID.XXXXXX")"
PIDS=()
BACKEND_PIDS=()

die() { echo "demo: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it creates a netns, a cgroup and BPF pins)"
[ -n "$CGROUP_ROOT" ] || die "no cgroup v2 hierarchy is mounted"
mountpoint -q /sys/fs/bpf || die "bpffs is not mounted at /sys/fs/bpf (make setup mounts it)"
for f in dist/agent/main.js dist/controller/main.js build/bpf/sock_lb.bpf.o native/build/Release/sluice_bpf.node; do
  [ -e "$ROOT/$f" ] || die "$f is missing: run make build"
done

cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: cleaning up"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  # Anything still running in the demo netns was started by this script.
  for pid in $(ip netns pids "$NETNS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  "$ROOT/bin/sluice-agent" uninstall --cgroup "$CGROUP" --bpffs "$BPFFS" --log-level warn >/dev/null 2>&1 || true
  if [ -d "$CGROUP" ]; then
    for pid in $(cat "$CGROUP/cgroup.procs" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    sleep 0.1
    rmdir "$CGROUP" 2>/dev/null || true
  fi
  rm -rf "$BPFFS"
  ip netns del "$NETNS" 2>/dev/null || true
  rm -rf "$WORK"
  echo "demo: removed netns $NETNS, cgroup $CGROUP, pins $BPFFS"
}
trap cleanup INT TERM EXIT

ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
mkdir -p "$CGROUP" "$BPFFS"

# Three backends on loopback addresses of the demo netns.
for i in 1 2 3; do
  nsenter --net="/run/netns/$NETNS" node "$ROOT/examples/demo/backend.js" "127.0.1.$i" 8080 "backend-$i (127.0.1.$i)" &
  PIDS+=($!)
  BACKEND_PIDS+=($!)
done

cat >"$WORK/services.yaml" <<YAML
domain: mesh.local
services:
  - name: web
    namespace: demo
    vip: $VIP
    ports:
      - { name: http, port: 80, targetPort: 8080, protocol: TCP }
    algorithm: weighted
    healthCheck: { protocol: tcp, interval: 500ms, timeout: 300ms, healthyThreshold: 2, unhealthyThreshold: 2 }
    outlierDetection: { consecutiveFailures: 3, baseEjectionTime: 5s, maxEjectionPercent: 50 }
    backends:
      - { address: 127.0.1.1, weight: 3, node: demo-node }
      - { address: 127.0.1.2, weight: 2, node: demo-node }
      - { address: 127.0.1.3, weight: 1, node: demo-node }
YAML

nsenter --net="/run/netns/$NETNS" "$ROOT/bin/sluice-controller" --config "$WORK/services.yaml" --listen 127.0.0.1:7700 >"$WORK/controller.log" 2>&1 &
PIDS+=($!)
sleep 1
nsenter --net="/run/netns/$NETNS" "$ROOT/bin/sluice-agent" --controller 127.0.0.1:7700 --node demo-node --cgroup "$CGROUP" --bpffs "$BPFFS" \
  --metrics 127.0.0.1:9464 --dns 127.0.0.1:5353 --state-dir "$WORK/state" >"$WORK/agent.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  grep -q '"catalog applied"' "$WORK/agent.log" 2>/dev/null && break
  sleep 0.1
done
grep -q '"catalog applied"' "$WORK/agent.log" || { cat "$WORK/agent.log" >&2; die "the agent did not apply the catalog"; }

cat <<INFO
sluice demo is up in netns $NETNS
  VIP            $VIP:80 -> 3 backends, weights 3:2:1
  metrics        ip netns exec $NETNS curl -s http://127.0.0.1:9464/metrics | grep ^sluice_
  DNS            ip netns exec $NETNS dig @127.0.0.1 -p 5353 web.demo.svc.mesh.local
  catalog        $WORK/services.yaml (edit it: the controller pushes valid changes)
  logs           $WORK/agent.log, $WORK/controller.log
  try            kill ${BACKEND_PIDS[2]}   (backend-3 dies: traffic moves to the other two)
Ctrl-C stops the demo and removes everything.
INFO
sleep 3

# The client: in the demo cgroup (so connect() is steered) and netns, drawing the live table.
sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CGROUP" \
  nsenter --net="/run/netns/$NETNS" node "$ROOT/examples/demo/watch.js" "$VIP" 80 "$SECONDS_TO_RUN" \
  "$ROOT/bin/sluicectl" backends --bpffs "$BPFFS" &
WATCH=$!
PIDS+=($WATCH)
wait "$WATCH" || true
