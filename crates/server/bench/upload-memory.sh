#!/usr/bin/env bash
# File sharing under load of one big file: slixmpp asks for an upload slot and PUTs SIZE bytes
# (default 100 MiB, the largest Snikket accepts) to the release server's internal HTTP service,
# then the file is downloaded with curl. Prints the time of each and the server's resident memory
# before, at its peak and after, to show that uploads and downloads are streamed, not buffered.
#
# Usage: crates/server/bench/upload-memory.sh [SIZE_BYTES]   (ROUNDS=3 by default; medians)
set -euo pipefail
cd "$(dirname "$0")/../../.."
SIZE=${1:-104857600}
ROUNDS=${ROUNDS:-3}
DOMAIN=bench.test
SERVER_BIN=${SERVER_BIN:-target/release/snikket-server}
[[ -x $SERVER_BIN && -n ${SKIP_BUILD:-} ]] || cargo build --release --locked -p snikket-server >&2
WORK=$(mktemp -d /tmp/upload-bench.XXXXXX)
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$PID/status"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN,DNS:groups.$DOMAIN,DNS:share.$DOMAIN" \
  -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
mkdir -p "$WORK/data/letsencrypt/live/$DOMAIN"
cp "$WORK/cert.pem" "$WORK/data/letsencrypt/live/$DOMAIN/fullchain.pem"
cp "$WORK/key.pem" "$WORK/data/letsencrypt/live/$DOMAIN/privkey.pem"
C2S=$(free_port); HTTP=$(free_port)
run_env=(env -i PATH=/usr/bin:/bin SNIKKET_DOMAIN=$DOMAIN SNIKKET_ADMIN_EMAIL=admin@example.com
  SNIKKET_TWEAK_DATA_DIR="$WORK/data" SNIKKET_TWEAK_BIND_INTERFACES=127.0.0.1
  SNIKKET_TWEAK_C2S_PORT=$C2S SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT=$(free_port) SNIKKET_TWEAK_S2S_PORT=$(free_port)
  SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE=127.0.0.1 SNIKKET_TWEAK_INTERNAL_HTTP_PORT=$HTTP
  SNIKKET_TWEAK_SERVER_GRPC_PORT=$(free_port) SNIKKET_LOGLEVEL=warn
  SNIKKET_DAILY_UPLOAD_LIMIT_PER_USER_GB=100)
"${run_env[@]}" "$SERVER_BIN" >"$WORK/server.log" 2>&1 &
PID=$!
wait_port "$C2S"
client=(/usr/bin/python3 tests/clients/xmpp_client.py)
opts=(--port "$C2S" --ca "$WORK/cert.pem" --domain "$DOMAIN" --timeout 120)
token=$("${run_env[@]}" "$SERVER_BIN" create-invite | sed -n 's|.*/invite/\([^/]*\)/$|\1|p')
"${client[@]}" register "${opts[@]}" --user bench --password 'long test secret 42' --token "$token" >"$WORK/register.log" || { cat "$WORK/register.log" "$WORK/server.log" >&2; exit 1; }

rss0=$(kib VmRSS)
for i in $(seq 1 "$ROUNDS"); do
  t0=$(date +%s.%N)
  out=$("${client[@]}" upload "${opts[@]}" --user bench --password 'long test secret 42' \
        --count "$SIZE" --http "http://127.0.0.1:$HTTP")
  t1=$(date +%s.%N)
  url=$(awk '/^OK /{print $2}' <<<"$out")
  path=${url#https://share.$DOMAIN}
  t2=$(date +%s.%N)
  got=$(curl -s "http://127.0.0.1:$HTTP$path" | wc -c)
  t3=$(date +%s.%N)
  [[ $got == "$SIZE" ]] || { echo "download returned $got bytes" >&2; exit 1; }
  echo "$t0 $t1" | awk '{print $2-$1}' >>"$WORK/put"
  echo "$t2 $t3" | awk '{print $2-$1}' >>"$WORK/get"
done
peak=$(kib VmHWM); rss1=$(kib VmRSS)
mib=$(awk -v s="$SIZE" 'BEGIN {printf "%.1f", s/1048576}')
printf 'file: %s MiB, %s rounds (medians)\n' "$mib" "$ROUNDS"
printf 'upload (slot request + PUT, slixmpp/aiohttp): %.2f s\n' "$(median <"$WORK/put")"
printf 'download (GET, curl): %.2f s\n' "$(median <"$WORK/get")"
awk -v a="$rss0" -v p="$peak" -v b="$rss1" -v s="$SIZE" 'BEGIN {
  printf "server RSS: %.1f MiB before, %.1f MiB peak, %.1f MiB after\n", a/1024, p/1024, b/1024
  printf "peak growth / file size: %.3f\n", (p-a)*1024/s }'
