#!/usr/bin/env bash
# Builds one Docker image per service crate, from a single static release build of the workspace.
#
#   deploy/build-images.sh [--allow-partial] [SERVICE...]
#
# SERVICE is a directory name under crates/ (server, turn, cert-manager, web-proxy, portal).
# Without arguments every service is built whose crate has a `snikket-<service>` binary and
# which has deploy/<service>/Dockerfile, so a service crate added later is picked up by itself.
# --allow-partial (or IMAGES_ALLOW_PARTIAL=1) still builds the images of the services that
# compiled when another one does not, and exits 0; without it a failed service fails the script.
#
# Environment: IMAGE_PREFIX (default snikket-rs), IMAGE_TAG (default dev),
# CARGO_TARGET_DIR (default target/). Needs cargo, jq and docker; pulls nothing (FROM scratch).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

triple=x86_64-unknown-linux-gnu
prefix=${IMAGE_PREFIX:-snikket-rs}
tag=${IMAGE_TAG:-dev}
target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
allow_partial=${IMAGES_ALLOW_PARTIAL:-0}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

requested=()
for arg in "$@"; do
    case $arg in
        --allow-partial) allow_partial=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        -*) die "unknown option $arg" ;;
        *) requested+=("$arg") ;;
    esac
done

for tool in cargo jq docker; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -r $ca_bundle ]] || die "CA bundle $ca_bundle not found (apt-get install ca-certificates)"

# Services = binaries named snikket-<dir> in packages under crates/<dir>, with a Dockerfile.
metadata=$(cargo metadata --no-deps --format-version 1)
mapfile -t available < <(jq -r '
    .packages[] | . as $p
    | .targets[] | select(.kind | index("bin"))
    | select(.name == $p.name and (.name | startswith("snikket-")))
    | "\(.name | ltrimstr("snikket-")) \(.src_path)"' <<<"$metadata" | sort -u)

services=()
names=()
for line in "${available[@]}"; do
    svc=${line%% *}
    names+=("$svc")
    # A crate being written may declare its binary before main.rs exists; cargo would refuse
    # to build anything then, so leave that service out until it does.
    if [[ ! -f ${line#* } ]]; then
        log "skipping $svc: ${line#* } does not exist yet"
        continue
    fi
    if [[ ! -f deploy/$svc/Dockerfile ]]; then
        log "skipping $svc: no deploy/$svc/Dockerfile"
        continue
    fi
    if ((${#requested[@]})); then
        wanted=0
        for r in "${requested[@]}"; do [[ $r == "$svc" ]] && wanted=1; done
        ((wanted)) || continue
    fi
    services+=("$svc")
done
for r in "${requested[@]}"; do
    found=0
    for svc in "${services[@]}"; do [[ $r == "$svc" ]] && found=1; done
    ((found)) || die "no buildable service named $r (have: ${names[*]})"
done
((${#services[@]})) || die "no service crate with a binary and a Dockerfile"
log "services: ${services[*]}"

version=$(jq -r '[.packages[] | select(.name == "snikket-server") | .version][0] // "0.0.0"' <<<"$metadata")
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    revision="$revision-dirty"
fi

# One release build of all services; --keep-going so one broken crate does not hide the others.
pkg_args=()
for svc in "${services[@]}"; do pkg_args+=(-p "snikket-$svc"); done
log "cargo build --release --target $triple ${pkg_args[*]} (static)"
artifacts=$(mktemp)
trap 'rm -f "$artifacts"' EXIT
build_ok=1
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --keep-going --target "$triple" "${pkg_args[@]}" \
    --message-format=json-render-diagnostics >"$artifacts" || build_ok=0

built=()
failed=()
for svc in "${services[@]}"; do
    # Only executables cargo reported in this run count, never a stale file from an older build.
    exe=$(jq -r --arg n "snikket-$svc" \
        'select(.reason == "compiler-artifact" and .target.name == $n and .executable != null) | .executable' \
        "$artifacts" | tail -n1)
    if [[ -z $exe || ! -x $exe ]]; then
        failed+=("$svc")
        continue
    fi
    if readelf -lW "$exe" | grep -q 'INTERP'; then
        die "$exe is dynamically linked; a FROM scratch image needs a static binary"
    fi
    built+=("$svc:$exe")
done
if ((${#failed[@]})); then
    log "did not compile: ${failed[*]}"
    ((allow_partial)) || die "build failed (use --allow-partial to build the other images)"
fi
((build_ok)) || ((allow_partial)) || die "cargo build failed"

for entry in "${built[@]}"; do
    svc=${entry%%:*}
    exe=${entry#*:}
    ctx=$target_dir/images/$svc
    rm -rf "$ctx"
    mkdir -p "$ctx/root/usr/local/bin" "$ctx/root/etc/ssl/certs" "$ctx/owned/snikket" "$ctx/owned/tmp"
    chmod 0755 "$ctx/owned/snikket"
    chmod 1777 "$ctx/owned/tmp"
    cp "$exe" "$ctx/root/usr/local/bin/snikket-$svc"
    cp deploy/rootfs/etc/passwd deploy/rootfs/etc/group "$ctx/root/etc/"
    cp "$ca_bundle" "$ctx/root/etc/ssl/certs/ca-certificates.crt"
    chmod 0644 "$ctx/root/etc/passwd" "$ctx/root/etc/group" "$ctx/root/etc/ssl/certs/ca-certificates.crt"
    case $svc in
        server)
            # Snikket's documented commands, as links: `docker exec snikket create-invite ...`.
            for cmd in create-invite firewall doctor backup restore healthcheck; do
                ln -s snikket-server "$ctx/root/usr/local/bin/$cmd"
            done
            ;;
        cert-manager)
            mkdir -p "$ctx/owned/var/www/.well-known/acme-challenge"
            ;;
        web-proxy)
            mkdir -p "$ctx/owned/var/www/html/.well-known/acme-challenge"
            ;;
    esac
    cp "deploy/$svc/Dockerfile" "$ctx/Dockerfile"
    image=$prefix/$svc:$tag
    log "docker build $image ($(du -sh "$ctx" | cut -f1) context)"
    docker build --quiet \
        --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
        --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        -t "$image" "$ctx" >/dev/null
    docker image inspect --format "{{.Size}}" "$image" |
        awk -v i="$image" '{ printf "[build-images] built %s (%.1f MB)\n", i, $1 / 1e6 }' >&2
    printf '%s\n' "$image"
done
