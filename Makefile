# Snikket in Rust — developer entry points. Every target installs what it needs on a fresh Debian machine.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Debian packages the tests drive (third-party peers, headless Chromium for the portal's browser
# test) or need (PostgreSQL for the second backend).
TEST_PACKAGES := postgresql coturn pebble certbot prosody python3-slixmpp python3-aiohttp python3-cryptography curl nginx-light ca-certificates openssl chromium chromium-driver
# Extra packages for the benchmarks.
BENCH_PACKAGES := $(TEST_PACKAGES) wrk nginx hyperfine
# Outside the checkout: when run as root the cluster runs as the postgres user, which may not
# be able to enter the checkout (a mktemp -d parent is mode 0700).
PG_DIR := /tmp/snikket-pg-$(shell printf %s '$(CURDIR)' | md5sum | cut -c1-10)

.PHONY: help deps lint test run images e2e bench fuzz clean-pg

help:
	@echo "make run    - start every service on loopback (SQLite, self-signed certs) and print an admin invite link"
	@echo "make test   - format check, clippy -D warnings, all tests on SQLite and PostgreSQL"
	@echo "make lint   - format check and clippy only"
	@echo "make images - build the container images (static binaries, FROM scratch)"
	@echo "make e2e    - docker compose end-to-end check of the images"
	@echo "make bench  - benchmarks against the reference servers"

# Installs the Debian packages named in $(PKGS) that are missing (apt-get update only when needed).
define apt_install
	missing=""; for p in $(1); do dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  case " $$missing " in *" prosody "*) \
	    ($$SUDO systemctl disable --now prosody || $$SUDO service prosody stop) >/dev/null 2>&1 || true;; \
	  esac; \
	fi
endef
# (Prosody is only a test peer, started by the tests on free ports: a system Prosody that the
# package starts would hold 5222/5269, which `make run` needs.)

deps:
	@$(call apt_install,$(TEST_PACKAGES))
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first"; exit 1; }
	@rustup component add rustfmt clippy >/dev/null 2>&1 || true

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

test: lint
	@$(MAKE) --no-print-directory clean-pg
	@url=$$(tests/scripts/pg-cluster.sh start $(PG_DIR)); \
	trap 'tests/scripts/pg-cluster.sh stop $(PG_DIR)' EXIT; \
	echo "PostgreSQL test cluster: $$url"; \
	TEST_POSTGRES_URL=$$url SNIKKET_REQUIRE_BROWSER=1 cargo test --workspace --locked --no-fail-fast

clean-pg:
	@tests/scripts/pg-cluster.sh stop $(PG_DIR) || true
	@rm -rf $(PG_DIR)

run:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first"; exit 1; }
	deploy/local/run.sh

images:
	deploy/build-images.sh

e2e:
	@$(call apt_install,coturn curl jq docker-compose openssl tar python3-slixmpp python3-aiohttp)
	tests/compose/e2e.sh

bench:
	@$(call apt_install,$(BENCH_PACKAGES))
	cargo build --release --locked -p snikket-turn -p snikket-web-proxy
	crates/turn/bench/compare-coturn.sh
	crates/web-proxy/bench/bench.sh 10
	crates/loadgen/bench/compare-prosody.sh
	crates/server/bench/upload-memory.sh

# Each fuzz target runs for FUZZ_SECONDS (libFuzzer via cargo-fuzz, nightly toolchain).
FUZZ_SECONDS ?= 60
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	cd crates/xmpp/fuzz && for t in stream scram; do \
		cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done
	cd crates/turn/fuzz && cargo +nightly fuzz run stun_decode -- -max_total_time=$(FUZZ_SECONDS)
