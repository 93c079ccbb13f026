#!/usr/bin/env bash
# Benchmark: snikket-web-proxy against Debian's nginx configured the same way, in the same run.
# Measures requests/s and p99 latency with wrk for a small static file and for a proxied request
# (TLS on, HTTP/1.1 keep-alive), and the peak RSS of each proxy. ROUNDS (3) alternating rounds;
# the table gives medians and the ratio of the medians.
# Needs: wrk, nginx (apt-get install -y wrk nginx-light), openssl, and
#   cargo build -p snikket-web-proxy --release
# Usage: crates/web-proxy/bench/bench.sh [duration_seconds]   (loopback only)
set -eu
DUR=${1:-10}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BIN=${BIN:-"$ROOT/target/release/snikket-web-proxy"}
for tool in wrk nginx openssl; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { echo "missing $tool: apt-get install -y wrk nginx-light openssl" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "build first: cargo build -p snikket-web-proxy --release" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
T=$(mktemp -d); chmod 755 "$T"
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT INT TERM
DOMAIN=chat.example.test
LIVE="$T/data/letsencrypt/live/$DOMAIN"
mkdir -p "$LIVE" "$T/ngx/logs" "$T/backend/logs" "$T/www/static/proxy" "$T/acme"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$LIVE/privkey.pem" -out "$LIVE/fullchain.pem" -subj "/CN=$DOMAIN" \
  -addext "subjectAltName=DNS:$DOMAIN" 2>/dev/null
cp "$ROOT/crates/web-proxy/assets/snikket.css" "$T/www/static/proxy/snikket.css"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
B=$(port); PH=$(port); PS=$(port); NS=$(port)
common="daemon off; worker_processes auto; error_log /dev/null; events { worker_connections 1024; }"
temps="client_body_temp_path T/b; proxy_temp_path T/p; fastcgi_temp_path T/f; uwsgi_temp_path T/u; scgi_temp_path T/s;"
# Backend: a fixed small answer, shared by both proxies.
cat > "$T/backend/nginx.conf" <<NGX
$common
pid $T/backend/pid;
http { access_log off; ${temps//T\//$T/backend/}
  server { listen 127.0.0.1:$B; location / { return 200 "backend ok\n"; } } }
NGX
# nginx front: the same job as snikket-web-proxy (TLS, HSTS, static file, proxy with headers).
cat > "$T/ngx/nginx.conf" <<NGX
$common
pid $T/ngx/pid;
http { access_log off; server_tokens off; ${temps//T\//$T/ngx/}
  include /etc/nginx/mime.types;
  upstream portal { server 127.0.0.1:$B; keepalive 32; }
  server { listen 127.0.0.1:$NS ssl http2; server_name $DOMAIN;
    ssl_certificate $LIVE/fullchain.pem; ssl_certificate_key $LIVE/privkey.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:le_nginx_SSL:1m;
    add_header Strict-Transport-Security "max-age=63072000" always;
    root $T/www;
    location /static/ { }
    location / { proxy_pass http://portal; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https; } } }
NGX
"$NGINX" -p "$T/backend" -c "$T/backend/nginx.conf" & PIDS="$PIDS $!"
"$NGINX" -p "$T/ngx" -c "$T/ngx/nginx.conf" & PIDS="$PIDS $!"
NGX_PID=$!
env -i PATH="$PATH" ${TOKIO_WORKER_THREADS:+TOKIO_WORKER_THREADS=$TOKIO_WORKER_THREADS} SNIKKET_DOMAIN=$DOMAIN SNIKKET_ADMIN_EMAIL=bench@example.test SNIKKET_LOGLEVEL=warn \
  SNIKKET_TWEAK_DATA_DIR="$T/data" SNIKKET_TWEAK_BIND_INTERFACES=127.0.0.1 \
  SNIKKET_TWEAK_HTTP_PORT=$PH SNIKKET_TWEAK_HTTPS_PORT=$PS SNIKKET_TWEAK_ACME_CHALLENGE_DIR="$T/acme" \
  SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_HOST=127.0.0.1 SNIKKET_TWEAK_PORTAL_INTERNAL_HTTP_PORT=$B \
  "$BIN" >/dev/null & PIDS="$PIDS $!"
OUR_PID=$!
sleep 2
ROUNDS=${ROUNDS:-3}
once() { # url -> "rps p99_ms errors"
  out=$(wrk -t2 -c32 -d"${DUR}s" --latency -H "Host: $DOMAIN" "$1")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" { v=$2; if (v ~ /us$/) { sub(/us$/,"",v); v=v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v=v*1000 } print v }')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {n++} END {print n+0}')
  echo "$rps $p99 $errs"
}
median() { sort -g | awk '{a[NR]=$1} END { if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
rss() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
echo "wrk -t2 -c32 -d${DUR}s, TLS, HTTP/1.1 keep-alive, loopback; $ROUNDS alternating rounds, medians"
printf '%-10s %-18s %12s %10s %8s %s\n' "request" "server" "req/s" "p99 ms" "errors" "per round (req/s)"
for kind in ${KINDS:-static proxied}; do
  case $kind in static) path=/static/proxy/snikket.css ;; proxied) path=/login ;; esac
  : > "$T/ours.$kind"; : > "$T/ngx.$kind"
  for r in $(seq "$ROUNDS"); do
    once "https://127.0.0.1:$PS$path" >> "$T/ours.$kind"
    once "https://127.0.0.1:$NS$path" >> "$T/ngx.$kind"
  done
  for who in ours ngx; do
    f="$T/$who.$kind"
    name=$([ $who = ours ] && echo snikket-web-proxy || echo nginx)
    printf '%-10s %-18s %12s %10s %8s %s\n' "$kind" "$name" "$(cut -d' ' -f1 "$f" | median)" \
      "$(cut -d' ' -f2 "$f" | median)" "$(awk '{s+=$3} END {print s+0}' "$f")" "$(cut -d' ' -f1 "$f" | tr '\n' ' ')"
  done
  o=$(cut -d' ' -f1 "$T/ours.$kind" | median); n=$(cut -d' ' -f1 "$T/ngx.$kind" | median)
  echo "$kind: snikket-web-proxy / nginx throughput = $(awk -v o="$o" -v n="$n" 'BEGIN { printf "%.3f", o/n }')"
done
workers=0
for w in $(pgrep -P "$NGX_PID" 2>/dev/null); do workers=$((workers + $(rss "$w"))); done
echo "peak RSS: snikket-web-proxy $(rss $OUR_PID) KiB; nginx master $(rss $NGX_PID) KiB + workers $workers KiB"
