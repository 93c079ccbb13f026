#!/usr/bin/env bash
# End-to-end test of the images on a real Docker engine: compose up, invite, HTTPS through the
# proxy, a TURN relay allocation with coturn's client, restart without data loss, compose down.
#
#   tests/compose/e2e.sh            builds the images first (deploy/build-images.sh)
#   E2E_SKIP_BUILD=1 tests/compose/e2e.sh    reuses existing snikket-rs/*:dev images
#
# Services whose image does not exist (yet) are left out and their steps are reported as
# skipped; the server image is required. Every wait is bounded: the image build by
# E2E_BUILD_TIMEOUT (default 2400 s, a cold release build on two cores takes ~15 min), the rest
# of the run by E2E_TIMEOUT (default 600 s). Only loopback is contacted. Ends with "N passed, N failed".
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$repo_root/tests/compose
project=snikket-e2e
prefix=${IMAGE_PREFIX:-snikket-rs}
tag=${IMAGE_TAG:-dev}
deadline=$((SECONDS + ${E2E_TIMEOUT:-600}))
domain=chat.e2e.test
https_port=18443
turn_port=13478
peer_port=41000

passed=0
failed=0
skipped=0
work=$(mktemp -d)
peer_pid=
compose_up=0

step() { printf '\n== %s\n' "$*"; }
pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
skip() { skipped=$((skipped + 1)); printf 'SKIP %s\n' "$*"; }
left() { local l=$((deadline - SECONDS)); ((l > 0)) && echo "$l" || echo 1; }

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    echo "neither 'docker compose' nor docker-compose is installed" >&2
    exit 1
fi
dc() { timeout "$(left)" "${compose[@]}" -p "$project" -f "$work/docker-compose.yml" "$@"; }

cleanup() {
    local rc=$?
    if [[ -n $peer_pid ]]; then kill "$peer_pid" 2>/dev/null || true; fi
    if ((compose_up)); then
        if ((failed)); then
            echo "--- container logs (last 40 lines each)"
            for c in snikket snikket-proxy snikket-certs snikket-turn snikket-portal; do
                docker logs --tail 40 "$c" 2>&1 | sed "s/^/[$c] /" || true
            done
        fi
        timeout 120 "${compose[@]}" -p "$project" -f "$work/docker-compose.yml" down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

finish() {
    printf '\n%s passed, %s failed, %s skipped\n' "$passed" "$failed" "$skipped"
    ((failed == 0))
}

# ---------------------------------------------------------------------------------------------
step "images"
if [[ ${E2E_SKIP_BUILD:-0} != 1 ]]; then
    build_start=$SECONDS
    if timeout "${E2E_BUILD_TIMEOUT:-2400}" "$repo_root/deploy/build-images.sh" --allow-partial >"$work/build.log" 2>&1; then
        pass "deploy/build-images.sh ($((SECONDS - build_start)) s)"
    else
        rc=$?
        tail -n 30 "$work/build.log"
        ((rc == 124)) && echo "the image build exceeded E2E_BUILD_TIMEOUT=${E2E_BUILD_TIMEOUT:-2400} s"
        fail "deploy/build-images.sh"
    fi
fi
# The run's own budget starts once the images exist.
deadline=$((SECONDS + ${E2E_TIMEOUT:-600}))
# compose service -> image directory
declare -A image_of=(
    [snikket_server]=server [snikket_proxy]=web-proxy [snikket_certs]=cert-manager
    [snikket_turn]=turn [snikket_portal]=portal
)
declare -A have=()
services=()
for svc in snikket_server snikket_certs snikket_proxy snikket_turn snikket_portal; do
    if docker image inspect "$prefix/${image_of[$svc]}:$tag" >/dev/null 2>&1; then
        have[$svc]=1
        services+=("$svc")
        size=$(docker image inspect --format '{{.Size}}' "$prefix/${image_of[$svc]}:$tag")
        echo "image $prefix/${image_of[$svc]}:$tag ($((size / 1000)) kB)"
    else
        echo "image $prefix/${image_of[$svc]}:$tag missing: $svc left out"
    fi
done
if [[ -z ${have[snikket_server]:-} ]]; then
    fail "the server image $prefix/server:$tag is required"
    finish
fi

step "compose up (${services[*]})"
for port in 18080 "$https_port" 15222 15223 15269 15280 15765 15290 15291 15292 "$turn_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "port $port on 127.0.0.1 is already in use; stop what uses it"
        finish
    fi
done
sed -e "s|image: snikket-rs/\([a-z-]*\):dev|image: $prefix/\1:$tag|" \
    "$repo_root/compose/docker-compose.yml" >"$work/docker-compose.yml"
cp "$here/snikket.conf" "$work/snikket.conf"
compose_up=1
if dc up -d "${services[@]}" >"$work/up.log" 2>&1; then
    pass "docker compose up -d"
else
    cat "$work/up.log"
    fail "docker compose up -d"
    finish
fi

# Waits until every started container is healthy (if its image has a HEALTHCHECK) or running
# without restarts, for at most $1 seconds.
wait_ready() {
    local limit=$((SECONDS + $1)) c state health restarts pending
    while ((SECONDS < limit && SECONDS < deadline)); do
        pending=()
        for svc in "${services[@]}"; do
            c=$(dc ps -q "$svc" 2>/dev/null | head -n1)
            [[ -n $c ]] || { pending+=("$svc:absent"); continue; }
            state=$(docker inspect --format '{{.State.Status}}' "$c")
            health=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$c")
            restarts=$(docker inspect --format '{{.RestartCount}}' "$c")
            if [[ $restarts != 0 ]]; then
                echo "$svc restarted $restarts times (crashing)"
                return 1
            fi
            if [[ $state != running ]] || [[ $health != none && $health != healthy ]]; then
                pending+=("$svc:$state/$health")
            fi
        done
        ((${#pending[@]} == 0)) && return 0
        sleep 2
    done
    echo "not ready: ${pending[*]}"
    return 1
}

step "wait for health"
t0=$SECONDS
if wait_ready 120; then
    pass "all containers running, healthy where a HEALTHCHECK exists ($((SECONDS - t0)) s)"
else
    fail "containers did not become ready"
    finish
fi

# Idle memory of the stack (informational, not asserted): sum of the containers' usage.
mapfile -t names < <(for svc in "${services[@]}"; do dc ps -q "$svc"; done)
if ((${#names[@]})) && docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' "${names[@]}" >"$work/mem" 2>/dev/null; then
    sed 's/^/memory /' "$work/mem"
    awk '{ v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v);
           f = (u == "GiB") ? 1024 : (u == "KiB" || u == "kB") ? 1 / 1024 : 1; t += v * f }
         END { printf "memory total %.1f MiB (idle)\n", t }' "$work/mem"
fi

# ---------------------------------------------------------------------------------------------
step "create-invite"
token=
if out=$(timeout 60 docker exec snikket create-invite --admin --group default 2>"$work/invite.err"); then
    # Exactly: blank line, "Your invite link: URL", blank line (spec 4.6).
    link_re="^Your invite link: https://${domain//./\\.}(:$https_port)?/invite/([A-Za-z0-9_-]{24})/$"
    mapfile -t lines <<<"$out"$'\n'
    if [[ ${lines[0]} == "" && ${lines[1]} =~ $link_re && ${lines[2]} == "" ]]; then
        token=${BASH_REMATCH[2]}
        pass "create-invite printed an invite link (token $token)"
    else
        printf '%s\n' "$out" | sed 's/^/> /'
        fail "create-invite output format"
    fi
else
    cat "$work/invite.err"
    fail "docker exec snikket create-invite --admin --group default"
fi

# Backs up the running server through its own command and extracts the archive into $1.
snapshot() {
    mkdir -p "$1"
    timeout 60 docker exec snikket backup - >"$1.tar" 2>"$1.err" &&
        tar -xf "$1.tar" -C "$1"
}

# Prints "role|consumed_at|expires_at" of an invite in an extracted snapshot's database.
invite_row() {
    python3 - "$1/snikket/server/snikket.sqlite" "$2" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
row = db.execute("SELECT role, consumed_at, expires_at FROM invites WHERE token = ?", (sys.argv[2],)).fetchone()
print("|".join("" if v is None else str(v) for v in row) if row else "missing")
PY
}

step "backup of the running server"
turn_secret=
if snapshot "$work/before"; then
    row=$(invite_row "$work/before" "$token")
    turn_secret=$(head -n1 "$work/before/snikket/prosody/turn-auth-secret-v2" 2>/dev/null || true)
    if [[ $row == missing || -z $token ]]; then
        fail "backup taken, but the invite is not in its database ($row)"
    elif [[ -z $turn_secret ]]; then
        fail "backup has no TURN secret"
    else
        pass "consistent backup while running: invite stored ($row), TURN secret present"
    fi
else
    cat "$work/before.err"
    fail "docker exec snikket backup -"
fi

# ---------------------------------------------------------------------------------------------
step "HTTPS through the proxy"
if [[ -n ${have[snikket_proxy]:-} && -n ${have[snikket_certs]:-} ]]; then
    fetch() {
        curl -sk --max-time 5 --resolve "$domain:$https_port:127.0.0.1" -o "$work/body" \
            -w '%{http_code}' "https://$domain:$https_port$1" || true
    }
    # The certificate manager writes the self-signed certificate and the proxy picks it up.
    code=000
    limit=$((SECONDS + 60))
    while ((SECONDS < limit)); do
        code=$(fetch /_health/xmpp)
        [[ $code == 200 ]] && break
        sleep 2
    done
    if [[ $code == 200 ]] && grep -q '^STATUS OK' "$work/body"; then
        pass "https://$domain/_health/xmpp through the proxy: STATUS OK"
    else
        fail "https://$domain/_health/xmpp: HTTP $code $(head -c 200 "$work/body" 2>/dev/null)"
    fi
    code=$(fetch /)
    # The portal sends visitors of / to its login page.
    if [[ $code =~ ^30[23]$ ]]; then
        code=$(fetch /login)
    fi
    if [[ $code =~ ^(200|502|503)$ ]] && grep -qi 'snikket\|E2E Family' "$work/body"; then
        pass "https://$domain/ answers HTTP $code with a Snikket page"
    else
        fail "https://$domain/: HTTP $code $(head -c 200 "$work/body" 2>/dev/null)"
    fi
    issuer=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$https_port" -servername "$domain" 2>/dev/null |
        openssl x509 -noout -ext subjectAltName 2>/dev/null || true)
    if grep -q "DNS:$domain" <<<"$issuer" && grep -q "DNS:groups.$domain" <<<"$issuer"; then
        pass "the proxy serves the certificate for $domain and groups.$domain"
    else
        fail "certificate names: $issuer"
    fi
    if [[ -n ${have[snikket_portal]:-} && -n $token ]]; then
        code=$(fetch "/invite/$token/")
        if [[ $code == 200 ]]; then pass "invite page through the proxy"; else fail "invite page: HTTP $code"; fi
    else
        skip "invite page (no portal image)"
    fi
else
    skip "HTTPS through the proxy (needs the web-proxy and cert-manager images)"
fi

# ---------------------------------------------------------------------------------------------
step "XMPP: two people register with invites and chat (slixmpp)"
c2s_port=$(sed -n 's/^SNIKKET_TWEAK_C2S_PORT=//p' "$here/snikket.conf")
c2s_tls_port=$(sed -n 's/^SNIKKET_TWEAK_C2S_DIRECT_TLS_PORT=//p' "$here/snikket.conf")
client="$repo_root/tests/clients/xmpp_client.py"
xmpp_ok=0
new_token() {
    timeout 60 docker exec snikket create-invite 2>/dev/null | sed -n 's|^Your invite link: .*/invite/\([A-Za-z0-9_-]*\)/$|\1|p'
}
if ! /usr/bin/python3 -c 'import slixmpp' 2>/dev/null; then
    fail "python3-slixmpp is not installed (apt-get install python3-slixmpp)"
else
    # The self-signed certificate the server presents is the trust anchor for the test clients.
    echo | timeout 10 openssl s_client -connect "127.0.0.1:$c2s_tls_port" -servername "$domain" 2>/dev/null |
        openssl x509 >"$work/xmpp-ca.pem" 2>/dev/null || true
    t1=$(new_token)
    t2=$(new_token)
    xc() { timeout 120 /usr/bin/python3 "$client" "$@" --port "$c2s_port" --ca "$work/xmpp-ca.pem" --domain "$domain" --timeout 20; }
    if [[ -s $work/xmpp-ca.pem && -n $t1 && -n $t2 ]] &&
        xc register --user alice --password 'correct horse battery' --token="$t1" >"$work/x1.log" 2>&1 &&
        xc register --user bob --password 'staple battery horse' --token="$t2" >"$work/x2.log" 2>&1; then
        pass "alice and bob registered through invite links over STARTTLS"
        if xc chat --user alice --password 'correct horse battery' --user2 bob --password2 'staple battery horse' \
            >"$work/x3.log" 2>&1; then
            pass "subscriptions, chat both ways and offline delivery: $(grep '^OK' "$work/x3.log")"
            xmpp_ok=1
        else
            tail -n 20 "$work/x3.log"
            fail "chat between alice and bob"
        fi
    else
        tail -n 20 "$work"/x1.log "$work"/x2.log 2>/dev/null || true
        fail "registration with invite tokens (tokens: ${t1:-none} ${t2:-none})"
    fi
fi

# ---------------------------------------------------------------------------------------------
step "federation: the s2s port asks other servers for STARTTLS"
s2s_port=$(sed -n 's/^SNIKKET_TWEAK_S2S_PORT=//p' "$here/snikket.conf")
s2s_reply=$(timeout 20 /usr/bin/python3 - "$s2s_port" "$domain" <<'PY' 2>&1 || true
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
           "xmlns:stream='http://etherx.jabber.org/streams' from='peer.example' to='%s' "
           "version='1.0'>" % sys.argv[2]).encode())
data = b""
while b"</features>" not in data and b"</stream:features>" not in data:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode(errors="replace"))
PY
)
if grep -q "urn:ietf:params:xml:ns:xmpp-tls" <<<"$s2s_reply" && grep -q "<required" <<<"$s2s_reply"; then
    pass "port $s2s_port offers STARTTLS as required"
else
    printf '%s\n' "$s2s_reply" | tail -n 5
    fail "the s2s port did not answer with required STARTTLS"
fi

# ---------------------------------------------------------------------------------------------
step "file sharing: slixmpp uploads through the proxy (XEP-0363), curl downloads"
if [[ -n ${have[snikket_proxy]:-} && $xmpp_ok == 1 ]]; then
    if xc upload --user alice --password 'correct horse battery' --count 300000 --https-via 127.0.0.1 \
        >"$work/x4.log" 2>&1; then
        read -r _ url sha _ < <(grep '^OK' "$work/x4.log")
        host=${url#https://}
        host=${host%%/*}
        host=${host%%:*}
        got=$(curl -sk --max-time 10 --resolve "$host:$https_port:127.0.0.1" "$url" | sha256sum | cut -d' ' -f1)
        if [[ $host == "share.$domain" && $got == "$sha" ]]; then
            pass "300 kB uploaded to share.$domain and downloaded intact"
        else
            fail "download of $url: sha256 $got, uploaded $sha"
        fi
    else
        tail -n 20 "$work/x4.log"
        fail "upload through the proxy"
    fi
else
    skip "file sharing (needs the web-proxy image and a working XMPP login)"
fi

# ---------------------------------------------------------------------------------------------
step "portal: an admin logs in and lists the invitations"
if [[ -n ${have[snikket_portal]:-} && -n ${have[snikket_proxy]:-} && $xmpp_ok == 1 ]]; then
    jar=$work/portal-cookies
    portal() { # PATH [curl args...]: HTTPS through the proxy with a cookie jar; prints the status
        local path=$1
        shift
        curl -sk --max-time 10 --resolve "$domain:$https_port:127.0.0.1" -c "$jar" -b "$jar" \
            -o "$work/portal.html" -w '%{http_code}' "$@" "https://$domain:$https_port$path" || true
    }
    ta=$(timeout 60 docker exec snikket create-invite --admin 2>/dev/null |
        sed -n 's|^Your invite link: .*/invite/\([A-Za-z0-9_-]*\)/$|\1|p')
    if [[ -n $ta ]] && xc register --user carol --password 'quiet admin phrase' --token="$ta" >"$work/x4.log" 2>&1; then
        portal /login >/dev/null
        csrf=$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' "$work/portal.html" | head -n 1)
        code=$(portal /login --data-urlencode "csrf=$csrf" --data-urlencode user=carol \
            --data-urlencode 'password=quiet admin phrase')
        if [[ $code =~ ^30[23]$ ]]; then
            pass "carol (admin, registered with an admin invite) logged into the portal"
        else
            fail "portal login: HTTP $code $(grep -o '<p class="error[^<]*' "$work/portal.html" | head -n 1)"
        fi
        code=$(portal /admin/invitations)
        # The admin invite made at the start is still pending, so the list cannot be empty.
        if [[ $code == 200 ]] && grep -q 'href="/admin/invitation/' "$work/portal.html"; then
            pass "the admin panel lists $(grep -c 'href="/admin/invitation/' "$work/portal.html") pending invitation(s)"
        else
            fail "/admin/invitations: HTTP $code"
        fi
        code=$(portal /admin/users)
        if [[ $code == 200 ]] && grep -q 'alice' "$work/portal.html" && grep -q 'carol' "$work/portal.html"; then
            pass "the admin panel lists the users"
        else
            fail "/admin/users: HTTP $code"
        fi
    else
        tail -n 20 "$work/x4.log" 2>/dev/null || true
        fail "registering an admin with an admin invite (token: ${ta:-none})"
    fi
else
    skip "portal login (needs the portal and proxy images and working XMPP registration)"
fi

# ---------------------------------------------------------------------------------------------
step "TURN relay allocation with turnutils_uclient"
if [[ -z ${have[snikket_turn]:-} ]]; then
    skip "TURN (no turn image)"
elif ! command -v turnutils_uclient >/dev/null; then
    skip "TURN (turnutils_uclient not installed: apt-get install coturn)"
elif [[ -z $turn_secret ]]; then
    fail "TURN: no shared secret to compute credentials from"
else
    # TURN REST API credentials as the server hands them out over XEP-0215 to a logged-in user;
    # without a working XMPP step, computed from the shared secret the same way:
    # username = expiry[:name], password = base64(HMAC-SHA1(secret, username)).
    turn_user=
    if ((xmpp_ok)) && timeout 120 /usr/bin/python3 "$client" extdisco --user alice --password 'correct horse battery' \
        --port "$c2s_port" --ca "$work/xmpp-ca.pem" --domain "$domain" --timeout 20 >"$work/extdisco.log" 2>&1; then
        read -r _ _ _ turn_user turn_pass < <(grep '^TURN ' "$work/extdisco.log")
        pass "the server handed out TURN credentials over XEP-0215 (expiry $turn_user)"
    else
        ((xmpp_ok)) && { tail -n 20 "$work/extdisco.log"; fail "XEP-0215 TURN credentials from the server"; }
        turn_user="$(($(date +%s) + 3600)):e2e"
        turn_pass=$(printf '%s' "$turn_user" | openssl dgst -sha1 -hmac "$turn_secret" -binary | base64)
    fi
    turnutils_peer -L 127.0.0.1 -p "$peer_port" >/dev/null 2>&1 &
    peer_pid=$!
    sleep 1
    if timeout 30 turnutils_uclient -u "$turn_user" -w "$turn_pass" -p "$turn_port" \
        -e 127.0.0.1 -r "$peer_port" -n 10 -l 100 -c -X 127.0.0.1 >"$work/uclient.log" 2>&1 &&
        grep -q 'tot_recv_msgs=[1-9]' "$work/uclient.log"; then
        pass "relay allocated and 10 messages echoed through it ($(grep -o 'tot_recv_msgs=[0-9]*' "$work/uclient.log" | tail -n1))"
    else
        tail -n 40 "$work/uclient.log"
        fail "turnutils_uclient through the relay"
    fi
    bad_pass=$(printf '%s' "$turn_user" | openssl dgst -sha1 -hmac "wrong-secret" -binary | base64)
    if timeout 30 turnutils_uclient -u "$turn_user" -w "$bad_pass" -p "$turn_port" \
        -e 127.0.0.1 -r "$peer_port" -n 1 -c -X 127.0.0.1 >"$work/uclient-bad.log" 2>&1 &&
        grep -q 'tot_recv_msgs=[1-9]' "$work/uclient-bad.log"; then
        fail "TURN accepted credentials made with the wrong secret"
    else
        pass "TURN refuses credentials made with the wrong secret"
    fi
    kill "$peer_pid" 2>/dev/null || true
    peer_pid=
fi

# ---------------------------------------------------------------------------------------------
step "docker compose restart keeps the data"
if dc restart >"$work/restart.log" 2>&1 && wait_ready 120; then
    pass "restarted and ready again"
else
    cat "$work/restart.log"
    fail "restart"
fi
if snapshot "$work/after"; then
    before=$(invite_row "$work/before" "$token")
    after=$(invite_row "$work/after" "$token")
    if [[ -n $token && $after != missing && $after == "$before" ]]; then
        pass "the invite created before the restart is still there, unused and unexpired ($after)"
    else
        fail "invite after restart: $after (before: $before)"
    fi
    if [[ $(head -n1 "$work/after/snikket/prosody/turn-auth-secret-v2") == "$turn_secret" ]]; then
        pass "the TURN secret survived the restart unchanged"
    else
        fail "the TURN secret changed across the restart"
    fi
else
    cat "$work/after.err"
    fail "backup after restart"
fi
if ((xmpp_ok)); then
    if timeout 120 /usr/bin/python3 "$client" login --user alice --password 'correct horse battery' \
        --port "$c2s_port" --ca "$work/xmpp-ca.pem" --domain "$domain" --timeout 20 >"$work/x4.log" 2>&1; then
        pass "alice still logs in after the restart"
    else
        tail -n 20 "$work/x4.log"
        fail "login after the restart"
    fi
fi
if out=$(timeout 60 docker exec snikket create-invite 2>&1) && [[ $out == *"Your invite link: "* ]]; then
    pass "create-invite works after the restart"
else
    fail "create-invite after the restart: $out"
fi

step "docker compose down -v"
if dc down -v --remove-orphans >"$work/down.log" 2>&1; then
    compose_up=0
    if docker volume ls -q | grep -q "^${project//-/}_snikket_data$\|^${project}_snikket_data$"; then
        fail "the data volume is still there after down -v"
    else
        pass "stopped and volumes removed"
    fi
else
    cat "$work/down.log"
    fail "docker compose down -v"
fi
echo "took $SECONDS s"
finish
