#!/usr/bin/env bash
# Runs every service that exists on loopback with a development configuration:
# data in ./data, SQLite, self-signed certificates, web on https://localhost:8443/.
# Prints an admin invite link, then keeps running until Ctrl-C (which stops everything).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
data="$root/data"
mkdir -p "$data/logs" "$data/acme-challenges"
conf="$data/snikket.conf"
if [ ! -f "$conf" ]; then
  cat >"$conf" <<CONF
# Development configuration written by 'make run'. Edit freely; it is kept between runs.
SNIKKET_DOMAIN=localhost
SNIKKET_ADMIN_EMAIL=admin@localhost.example
SNIKKET_SITE_NAME=Snikket (local)
SNIKKET_TWEAK_DATA_DIR=$data
SNIKKET_TWEAK_ACME=0
SNIKKET_TWEAK_ACME_CHALLENGE_DIR=$data/acme-challenges
SNIKKET_TWEAK_BIND_INTERFACES=127.0.0.1
SNIKKET_TWEAK_INTERNAL_HTTP_INTERFACE=127.0.0.1
SNIKKET_TWEAK_HTTP_PORT=8080
SNIKKET_TWEAK_HTTPS_PORT=8443
SNIKKET_TWEAK_TURNSERVER_MIN_PORT=49152
SNIKKET_TWEAK_TURNSERVER_MAX_PORT=49251
SNIKKET_TWEAK_TURNSERVER_ALLOWED_PEERS=127.0.0.1
SNIKKET_UPDATE_CHECK=0
CONF
fi
export SNIKKET_CONFIG_FILE="$conf"

services=(cert-manager server turn web-proxy portal)
pkgs=()
for s in "${services[@]}"; do
  [ -f "crates/$s/Cargo.toml" ] && pkgs+=(-p "snikket-$s")
done
echo "building: ${pkgs[*]}"
cargo build --locked "${pkgs[@]}"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for s in "${services[@]}"; do
  bin="target/debug/snikket-$s"
  [ -x "$bin" ] || continue
  "$bin" >"$data/logs/$s.log" 2>&1 &
  pids+=($!)
  echo "started snikket-$s (pid $!, log data/logs/$s.log)"
  if [ "$s" = cert-manager ]; then
    for _ in $(seq 1 100); do [ -f "$data/letsencrypt/live/localhost/fullchain.pem" ] && break; sleep 0.1; done
  fi
done

sleep 1
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    echo "a service exited at startup; its log:" >&2
    tail -n 20 "$data"/logs/*.log >&2
    exit 1
  fi
done

target/debug/snikket-server create-invite --admin --group default
echo "Web portal: https://localhost:8443/ (self-signed certificate)."
echo "XMPP: localhost:5222 (STARTTLS) and :5223 (direct TLS). Press Ctrl-C to stop."
if [ "${MAKE_RUN_ONCE:-0}" = 1 ]; then exit 0; fi
wait -n "${pids[@]}" || true
echo "a service stopped; see data/logs/" >&2
