#!/usr/bin/env bash
# Benchmark of issue 3: our snikket-server against Debian's Prosody, same machine, same run.
# Each server is pinned to core 0 (taskset), the load generator to core 1. Loopback only.
# Usage: crates/loadgen/bench/compare-prosody.sh   (env: USERS, IDLE, IDLE_BIG, LOGINS, RATE, DURATION, REPS, REPS_MSG, RATE_FIXED, BENCH_DIR)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
DOMAIN=chat.test
USERS=${USERS:-1000}          # online users in the messages scenario
IDLE=${IDLE:-1000}            # idle sessions
IDLE_BIG=${IDLE_BIG:-5000 10000} # further idle points, one after the other ("" to skip)
LOGINS=${LOGINS:-500}         # logins per repetition
RATE=${RATE:-0}               # target messages/s (0 = as fast as possible, window-limited)
DURATION=${DURATION:-10}      # seconds of messaging per repetition
REPS=${REPS:-3}               # repetitions of logins (median reported)
REPS_MSG=${REPS_MSG:-1}       # repetitions of the max-rate messages run (1000 logins each)
RATE_FIXED=${RATE_FIXED:-500} # fixed total rate for latency below saturation (0 to skip)
BIG_POINTS=(); for n in $IDLE_BIG; do [ "$n" -gt 0 ] && BIG_POINTS+=("$n"); done
ACCOUNTS=$USERS; for n in "$IDLE" "${BIG_POINTS[@]}"; do [ "$n" -gt "$ACCOUNTS" ] && ACCOUNTS=$n; done
CONC=${CONC:-50}

cd "$ROOT"
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}   # BIN_DIR=target/debug SKIP_BUILD=1 for a smoke test
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p snikket-server -p snikket-loadgen >&2
SERVER_BIN="$BIN_DIR/snikket-server"
LG="$BIN_DIR/snikket-loadgen"
command -v prosody >/dev/null || apt-get install -y prosody >&2
ulimit -n 20000 2>/dev/null || true

# BENCH_DIR: where both servers keep their data (e.g. /dev/shm to take the disk out of the picture).
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/snikket-bench.XXXXXX"); chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

# One self-signed certificate (EC P-256, CA:FALSE so rustls accepts it as the end entity) for both.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN,DNS:groups.$DOMAIN,DNS:share.$DOMAIN" \
  -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

# stop PID: SIGTERM, then SIGKILL after 5 s (Prosody sometimes ignores SIGTERM under load)
stop() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# get KEY FILE: value of key= in a loadgen output file
get() { sed -n "s/^$1=//p" "$2" | tail -1; }
median() { sort -g | awk '{a[NR]=$1} END{if(NR==0){print "nan"}else{print a[int((NR+1)/2)]}}'; }

# run_suite NAME PID PORT -> writes $WORK/NAME.* result files
run_suite() {
  local name=$1 pid=$2 port=$3
  local common=(--addr "127.0.0.1:$port" --domain "$DOMAIN" --ca "$WORK/cert.pem" --accounts "$ACCOUNTS"
                --concurrency "$CONC" --server-pid "$pid")
  sleep 1
  grep VmRSS "/proc/$pid/status" | awk '{print $2}' > "$WORK/$name.rss_idle"
  echo "[$name] idle $IDLE" >&2
  taskset -c 1 "$LG" idle "${common[@]}" --max-secs 100 --sessions "$IDLE" > "$WORK/$name.idle1" || true
  for n in "${BIG_POINTS[@]}"; do
    echo "[$name] idle $n" >&2
    sleep 1
    # More sessions take a slow server longer to log in: 100 s, and a second per hundred more.
    local secs=$(( 100 + n / 100 ))
    timeout $(( secs + 10 )) taskset -c 1 "$LG" idle "${common[@]}" --max-secs "$secs" --sessions "$n" \
      > "$WORK/$name.idle.$n" || true
  done
  for r in $(seq 1 "$REPS"); do
    echo "[$name] logins rep $r" >&2
    sleep 1
    taskset -c 1 "$LG" logins "${common[@]}" --max-secs 100 --count "$LOGINS" > "$WORK/$name.logins.$r" || true
  done
  if [ "$RATE_FIXED" -gt 0 ]; then
    echo "[$name] messages at $RATE_FIXED/s" >&2
    sleep 1
    taskset -c 1 "$LG" messages "${common[@]}" --max-secs 100 --users "$USERS" --rate "$RATE_FIXED" --window 64 \
      --duration "$DURATION" > "$WORK/$name.fixed.1" || true
  fi
  for r in $(seq 1 "$REPS_MSG"); do
    echo "[$name] messages rep $r" >&2
    sleep 1
    taskset -c 1 "$LG" messages "${common[@]}" --max-secs 100 --users "$USERS" --rate "$RATE" --duration "$DURATION" \
      > "$WORK/$name.messages.$r" || true
  done
}

# med NAME KIND KEY: median of KEY over the repetitions of KIND
med() { for f in "$WORK/$1.$2".*; do get "$3" "$f"; done | grep -v '^$' | median; }

# ---- our server ----
OURS="$WORK/ours"; mkdir -p "$OURS/letsencrypt/live/$DOMAIN" "$OURS/server"
cp "$WORK/cert.pem" "$OURS/letsencrypt/live/$DOMAIN/fullchain.pem"
cp "$WORK/key.pem" "$OURS/letsencrypt/live/$DOMAIN/privkey.pem"
"$LG" mkaccounts --count "$ACCOUNTS" --sqlite "$OURS/server/snikket.sqlite" >&2
P_OURS=$(free_port)
env -i PATH=/usr/bin:/bin SNIKKET_DOMAIN=$DOMAIN SNIKKET_ADMIN_EMAIL=admin@example.com \
  SNIKKET_TWEAK_DATA_DIR="$OURS" SNIKKET_TWEAK_BIND_INTERFACES=127.0.0.1 \
  SNIKKET_TWEAK_C2S_PORT=$P_OURS SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT=$(free_port) SNIKKET_TWEAK_S2S_PORT=$(free_port) \
  SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE=127.0.0.1 SNIKKET_TWEAK_INTERNAL_HTTP_PORT=$(free_port) \
  SNIKKET_TWEAK_SERVER_GRPC_PORT=$(free_port) SNIKKET_MAX_USER_CLIENTS=100 SNIKKET_LOGLEVEL=warn \
  taskset -c 0 "$SERVER_BIN" > "$WORK/ours.log" 2>&1 &
PID_OURS=$!; PIDS+=("$PID_OURS")
wait_port "$P_OURS"
run_suite ours "$PID_OURS" "$P_OURS"
stop "$PID_OURS"

# ---- Prosody ----
PR="$WORK/prosody"; mkdir -p "$PR/data/chat%2etest/accounts"
cp "$WORK/cert.pem" "$WORK/key.pem" "$PR/"; mkdir -p "$PR/certs"
"$LG" mkaccounts --count "$ACCOUNTS" --prosody-accounts "$PR/data/chat%2etest/accounts" >&2
P_PR=$(free_port)
cat > "$PR/prosody.cfg.lua" <<LUA
-- Snikket's relevant settings, nothing else.
daemonize = false
pidfile = "$PR/prosody.pid"
data_path = "$PR/data"
plugin_paths = { }
log = { error = "$PR/prosody.log" }
network_backend = "epoll"
interfaces = { "127.0.0.1" }
c2s_ports = { $P_PR }
c2s_direct_tls_ports = { }
s2s_ports = { }
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "carbons"; "mam"; "smacks" }
modules_disabled = { "s2s" }
c2s_require_encryption = true
authentication = "internal_hashed"
allow_registration = false
storage = "internal"
default_archive_policy = true
archive_expires_after = "never"
ssl = { certificate = "$PR/cert.pem"; key = "$PR/key.pem" }
certificates = "$PR/certs"
VirtualHost "$DOMAIN"
LUA
chown -R prosody "$PR"
taskset -c 0 setpriv --reuid prosody --regid prosody --init-groups prosody --config "$PR/prosody.cfg.lua" > "$WORK/prosody.out" 2>&1 &
PID_PR=$!; PIDS+=("$PID_PR")
wait_port "$P_PR"
run_suite prosody "$PID_PR" "$P_PR"
stop "$PID_PR"

# ---- table ----
row() { # label ours prosody
  awk -v l="$1" -v a="$2" -v b="$3" 'BEGIN{r=(b+0!=0 && a!="nan" && b!="nan")?sprintf("%.2f",a/b):"-"; printf "| %-34s | %12s | %12s | %8s |\n", l, a, b, r}'
}
v() { get "$2" "$WORK/$1" 2>/dev/null || true; }
echo
echo "Benchmark: users=$USERS idle=$IDLE ${BIG_POINTS[*]} logins=$LOGINS x$REPS messages ${DURATION}s (max x$REPS_MSG, $RATE_FIXED/s x1), servers on core 0, loadgen on core 1"
printf "| %-34s | %12s | %12s | %8s |\n" metric ours prosody ours/pro
echo "|------------------------------------|--------------|--------------|----------|"
row "RSS idle (KiB)" "$(cat "$WORK/ours.rss_idle")" "$(cat "$WORK/prosody.rss_idle")"
row "KiB per idle session @$IDLE" "$(v ours.idle1 server_kib_per_session)" "$(v prosody.idle1 server_kib_per_session)"
row "  sessions held @$IDLE" "$(v ours.idle1 idle_sessions)" "$(v prosody.idle1 idle_sessions)"
# Further points run in the same process after the first one closed its sessions, and the
# allocator keeps that memory for reuse: measure from the RSS before the first point, not from
# the RSS just before this one (which would credit the reused memory as free).
big() { awk -v a="$(v "$1.idle.$2" server_rss_after_kib)" -v b="$(v "$1.idle1" server_rss_before_kib)" \
  -v n="$(v "$1.idle.$2" idle_sessions)" 'BEGIN{ if (n+0 > 0 && a != "" && b != "") printf "%.2f", (a-b)/n; else print "nan" }'; }
for n in "${BIG_POINTS[@]}"; do
  row "KiB per idle session @$n" "$(big ours "$n")" "$(big prosody "$n")"
  row "  sessions held @$n" "$(v "ours.idle.$n" idle_sessions)" "$(v "prosody.idle.$n" idle_sessions)"
done
row "logins/s (median)" "$(med ours logins logins_per_s)" "$(med prosody logins logins_per_s)"
row "time-to-online p99 ms" "$(med ours logins online_p99_ms)" "$(med prosody logins online_p99_ms)"
row "server CPU ms/login" "$(med ours logins server_cpu_ms_per_login)" "$(med prosody logins server_cpu_ms_per_login)"
row "loadgen CPU ms/login" "$(med ours logins loadgen_cpu_ms_per_login)" "$(med prosody logins loadgen_cpu_ms_per_login)"
row "messages/s max (window 4/sender)" "$(med ours messages messages_per_s)" "$(med prosody messages messages_per_s)"
row "delivery p50 ms" "$(med ours messages delivery_p50_ms)" "$(med prosody messages delivery_p50_ms)"
row "delivery p99 ms" "$(med ours messages delivery_p99_ms)" "$(med prosody messages delivery_p99_ms)"
row "server CPU ms/message" "$(med ours messages server_cpu_ms_per_message)" "$(med prosody messages server_cpu_ms_per_message)"
row "loadgen CPU ms/message" "$(med ours messages loadgen_cpu_ms_per_message)" "$(med prosody messages loadgen_cpu_ms_per_message)"
if [ "$RATE_FIXED" -gt 0 ]; then
row "messages/s @$RATE_FIXED/s offered" "$(med ours fixed messages_per_s)" "$(med prosody fixed messages_per_s)"
row "delivery p50 ms @$RATE_FIXED/s" "$(med ours fixed delivery_p50_ms)" "$(med prosody fixed delivery_p50_ms)"
row "delivery p99 ms @$RATE_FIXED/s" "$(med ours fixed delivery_p99_ms)" "$(med prosody fixed delivery_p99_ms)"
row "server CPU ms/message @$RATE_FIXED/s" "$(med ours fixed server_cpu_ms_per_message)" "$(med prosody fixed server_cpu_ms_per_message)"
fi
row "message errors (median)" "$(med ours messages messages_errors)" "$(med prosody messages messages_errors)"
