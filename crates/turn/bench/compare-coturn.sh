#!/usr/bin/env bash
# Benchmark: snikket-turn against Debian's coturn with the same settings, both loaded by
# coturn's turnutils_uclient on 127.0.0.1. Prints allocations/s, relayed packets/s, Mbit/s,
# server CPU seconds and peak RSS for each. Report only; nothing is asserted.
#
# Usage: crates/turn/bench/compare-coturn.sh [path/to/snikket-turn]
# Needs: coturn (turnserver, turnutils_uclient). Build ours first: cargo build --release -p snikket-turn
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
OURS=${1:-$ROOT/target/release/snikket-turn}
for t in turnserver turnutils_uclient; do
  command -v $t >/dev/null || { echo "$t missing: apt-get install -y coturn" >&2; exit 1; }
done
[ -x "$OURS" ] || { echo "$OURS missing: cargo build --release -p snikket-turn" >&2; exit 1; }

SECRET=bench-secret
CLIENTS=${CLIENTS:-40}        # uclient -m: client pairs relaying to each other (-y)
MESSAGES=${MESSAGES:-400}     # uclient -n per client
LEN=${LEN:-172}               # uclient -l: bytes per message (an Opus frame + RTP header)
INTERVAL=${INTERVAL:-5}       # uclient -z: ms between messages per client
ALLOCS=${ALLOCS:-300}         # clients for the allocation-rate run
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cpu_secs() { # utime+stime of a pid in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"
}
rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

start_ours() {
  PORT=$(free_port)
  SNIKKET_DOMAIN=example.com SNIKKET_ADMIN_EMAIL=a@example.com SNIKKET_LOGLEVEL=warn \
  SNIKKET_TWEAK_DATA_DIR="$WORK/ours" SNIKKET_TWEAK_BIND_INTERFACES=127.0.0.1 \
  SNIKKET_TWEAK_TURNSERVER_PORT=$PORT SNIKKET_TWEAK_TURNSERVER_TLS_PORT=0 \
  SNIKKET_TWEAK_TURNSERVER_MIN_PORT=50000 SNIKKET_TWEAK_TURNSERVER_MAX_PORT=59999 \
  SNIKKET_TWEAK_TURNSERVER_SECRET=$SECRET SNIKKET_TWEAK_TURNSERVER_ALLOWED_PEERS=127.0.0.1 \
  SNIKKET_TWEAK_TURNSERVER_USER_QUOTA=10000 SNIKKET_TWEAK_TURNSERVER_MAX_BPS=0 \
  SNIKKET_TWEAK_TURN_GRPC_PORT=$(free_port) \
    "$OURS" >"$WORK/ours.log" 2>&1 &
  echo $! >"$WORK/server.pid"
}

start_coturn() {
  PORT=$(free_port)
  turnserver -n --no-cli --no-tls --no-dtls --log-file=stdout --simple-log \
    -L 127.0.0.1 --relay-ip=127.0.0.1 --listening-port="$PORT" \
    --min-port=50000 --max-port=59999 --use-auth-secret --static-auth-secret=$SECRET \
    -r example.com --no-multicast-peers --no-tcp-relay --allowed-peer-ip=127.0.0.1 --allow-loopback-peers \
    --userdb="$WORK/turndb" >"$WORK/coturn.log" 2>&1 &
  echo $! >"$WORK/server.pid"
}

wait_ready() {
  for _ in $(seq 100); do
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$PORT" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server did not start" >&2; exit 1
}

measure() { # name
  local name=$1 pid
  pid=$(cat "$WORK/server.pid")
  wait_ready
  local c0 t0 t1 c1 c2 t2 out sent recv
  # Allocation rate: many clients, one message each.
  t0=$(date +%s.%N)
  turnutils_uclient -p "$PORT" -W $SECRET -u bench -y -c -n 1 -m "$ALLOCS" -e 127.0.0.1 127.0.0.1 >"$WORK/$name-alloc.out" 2>&1 || true
  t1=$(date +%s.%N)
  c1=$(cpu_secs "$pid")
  # Relay throughput.
  out=$(turnutils_uclient -p "$PORT" -W $SECRET -u bench -y -c -n "$MESSAGES" -m "$CLIENTS" -l "$LEN" -z "$INTERVAL" -e 127.0.0.1 127.0.0.1 2>&1 || true)
  t2=$(date +%s.%N)
  c2=$(cpu_secs "$pid")
  sent=$( (echo "$out" | grep 'start_mclient: tot_send_msgs=' || true) | tail -1 | sed 's/.*tot_send_msgs=\([0-9]*\).*/\1/')
  recv=$( (echo "$out" | grep 'start_mclient: tot_send_msgs=' || true) | tail -1 | sed 's/.*tot_recv_msgs=\([0-9]*\).*/\1/')
  python3 - "$name" "$t0" "$t1" "$t2" "$c1" "$c2" "${sent:-0}" "${recv:-0}" "$(rss_kb "$pid")" "$ALLOCS" "$LEN" <<'PY'
import sys
name, t0, t1, t2, c1, c2, sent, recv, rss, allocs, ln = sys.argv[1:]
t0, t1, t2, c1, c2 = map(float, (t0, t1, t2, c1, c2))
sent, recv, rss, allocs, ln = map(int, (sent, recv, rss, allocs, ln))
relay_s = t2 - t1
# Each message crosses the relay twice (client -> own relay -> peer relay -> peer client).
pps = 2 * recv / relay_s if relay_s else 0
print(f"{name:8} allocations/s {2*allocs/(t1-t0):8.1f}  sent {sent} recv {recv} loss {100*(1-recv/max(sent,1)):.2f}%  "
      f"relayed pkt/s {pps:9.1f}  Mbit/s {pps*ln*8/1e6:6.2f}  server CPU {c2-c1:5.2f}s of {relay_s:5.2f}s "
      f"({100*(c2-c1)/relay_s:.0f}%)  peak RSS {rss/1024:.1f} MiB")
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

start_ours; measure snikket
start_coturn; measure coturn
