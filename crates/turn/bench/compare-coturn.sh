#!/usr/bin/env bash
# Benchmark: snikket-turn against Debian's coturn with the same settings, both loaded by
# coturn's turnutils_uclient on 127.0.0.1, alternating, ROUNDS times. Prints the medians of
# allocations/s, server CPU per allocation, relayed packets/s, Mbit/s, server CPU per packet and
# peak RSS for each, and ours as a ratio of coturn's. Report only; nothing is asserted.
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
ALLOCS=${ALLOCS:-300}         # clients for the allocation-rate run, per uclient process
ALLOC_PROCS=${ALLOC_PROCS:-4} # concurrent uclient processes in the allocation-rate run
ROUNDS=${ROUNDS:-3}           # runs per server; medians are reported
# Each server is pinned to one core and the load to the others (as the XMPP bench does), so the
# server's CPU figures are its own; with a single core nothing is pinned.
if [ "$(nproc)" -ge 2 ]; then
  SERVER_CPU=${SERVER_CPU:-0}
  LOAD_CPUS=${LOAD_CPUS:-1-$(($(nproc) - 1))}
  ON_SERVER=(taskset -c "$SERVER_CPU")
  ON_LOAD=(taskset -c "$LOAD_CPUS")
else
  ON_SERVER=()
  ON_LOAD=()
fi
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
    "${ON_SERVER[@]}" "$OURS" >"$WORK/ours.log" 2>&1 &
  echo $! >"$WORK/server.pid"
}

start_coturn() {
  PORT=$(free_port)
  "${ON_SERVER[@]}" turnserver -n --no-cli --no-tls --no-dtls --log-file=stdout --simple-log \
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
  local c0 t0 t1 c1 c2 t2 out sent recv i pids=()
  # Allocation rate: several uclient processes at once, many clients each, one message each.
  # uclient paces its own clients, so the server's CPU time per allocation is reported too:
  # it is what bounds the rate a server can sustain.
  c0=$(cpu_secs "$pid")
  t0=$(date +%s.%N)
  for i in $(seq "$ALLOC_PROCS"); do
    "${ON_LOAD[@]}" turnutils_uclient -p "$PORT" -W $SECRET -u bench -y -c -n 1 -m "$ALLOCS" -e 127.0.0.1 127.0.0.1 >"$WORK/$name-alloc-$i.out" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}" 2>/dev/null || true
  t1=$(date +%s.%N)
  c1=$(cpu_secs "$pid")
  # Relay throughput.
  out=$("${ON_LOAD[@]}" turnutils_uclient -p "$PORT" -W $SECRET -u bench -y -c -n "$MESSAGES" -m "$CLIENTS" -l "$LEN" -z "$INTERVAL" -e 127.0.0.1 127.0.0.1 2>&1 || true)
  t2=$(date +%s.%N)
  c2=$(cpu_secs "$pid")
  sent=$( (echo "$out" | grep 'start_mclient: tot_send_msgs=' || true) | tail -1 | sed 's/.*tot_send_msgs=\([0-9]*\).*/\1/')
  recv=$( (echo "$out" | grep 'start_mclient: tot_send_msgs=' || true) | tail -1 | sed 's/.*tot_recv_msgs=\([0-9]*\).*/\1/')
  python3 - "$name" "$t0" "$t1" "$t2" "$c0" "$c1" "$c2" "${sent:-0}" "${recv:-0}" "$(rss_kb "$pid")" "$((ALLOCS * ALLOC_PROCS))" "$LEN" <<'PY' | tee -a "$WORK/results.tsv"
import sys
name, t0, t1, t2, c0, c1, c2, sent, recv, rss, allocs, ln = sys.argv[1:]
t0, t1, t2, c0, c1, c2 = map(float, (t0, t1, t2, c0, c1, c2))
sent, recv, rss, allocs, ln = map(int, (sent, recv, rss, allocs, ln))
relay_s = t2 - t1
# Each uclient client with -y allocates twice (its own relay and its peer's).
allocations = 2 * allocs
# Each message crosses the relay twice (client -> own relay -> peer relay -> peer client).
pps = 2 * recv / relay_s if relay_s else 0
print("\t".join(str(x) for x in (
    name, round(allocations / (t1 - t0), 1), round(1000 * (c1 - c0) / allocations, 3),
    round(pps, 1), round(pps * ln * 8 / 1e6, 2), round(1e6 * (c2 - c1) / max(2 * recv, 1), 2),
    round(100 * (1 - recv / max(sent, 1)), 2), round(rss / 1024, 1))))
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
  start_ours; measure snikket >/dev/null
  start_coturn; measure coturn >/dev/null
done

# Medians per server, and ours as a ratio of coturn's (same run, same machine, same load).
python3 - "$WORK/results.tsv" "$ROUNDS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
cols = ["allocations/s", "server CPU ms/allocation", "relayed pkt/s", "Mbit/s",
        "server CPU us/packet", "loss %", "peak RSS MiB",
        "capacity allocations/s/core", "capacity pkt/s/core"]
med = {}
for name in ("snikket", "coturn"):
    vals = [list(map(float, r[1:])) for r in rows if r[0] == name]
    # What one saturated core sustains, from the CPU each allocation and packet cost: uclient
    # paces its clients, so the measured rates show the load, these the server's limit.
    for v in vals:
        v.append(1000 / v[1] if v[1] else 0)
        v.append(1e6 / v[4] if v[4] else 0)
    med[name] = [statistics.median(v[i] for v in vals) for i in range(len(cols))]
print(f"medians of {sys.argv[2]} rounds (turnutils_uclient load on 127.0.0.1; server pinned to one core)")
print(f"{'':26}{'snikket-turn':>14}{'coturn':>14}{'ratio':>8}")
for i, c in enumerate(cols):
    a, b = med["snikket"][i], med["coturn"][i]
    print(f"{c:26}{a:14.2f}{b:14.2f}{(a / b if b else float('nan')):8.2f}")
PY
