# awning — the two commands of the README's quick start are `make demo` and `make test`.
# Both install what a fresh Debian/Ubuntu machine with only the Rust toolchain lacks.

CARGO ?= cargo
# Packages the build and the tests need: a C compiler, cmake (zlib-ng in
# pingora), pkg-config, redis-server / redis-cli for the Redis tests, and
# promtool (Debian's prometheus package) to check the metrics exposition, and
# systemd-analyze (systemd) to check the shipped unit.
APT_PACKAGES := build-essential cmake pkg-config redis-server redis-tools prometheus systemd

.PHONY: all deps build test demo check check-deploy bench bench-micro lint fmt clean

all: build

## deps: install missing system packages with apt-get (as root or via sudo)
deps:
	@missing=""; \
	command -v cc >/dev/null 2>&1 || missing="$$missing build-essential"; \
	command -v cmake >/dev/null 2>&1 || missing="$$missing cmake"; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "error: missing$$missing and cannot install them here."; \
	    echo "run: sudo apt-get update && sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

build: deps
	$(CARGO) build

## test: the whole test suite (unit + integration against the real binary)
test: deps
	$(CARGO) test

## demo: build and run the sample storefront with awning in front (Ctrl-C stops it)
demo: deps
	$(CARGO) run -- demo -c proxy.yaml

## check: validate the shipped configuration
check: deps
	$(CARGO) run -- check -c proxy.yaml

## check-deploy: systemd-analyze verify + security on systemd/awning.service
## (the same checks tests/deploy.rs runs in `make test`)
check-deploy: deps
	$(CARGO) test --test deploy

## bench: the load bench against nginx proxy_cache (installs nginx and wrk
## with apt-get when missing); writes benches/RESULTS.md. About 10 minutes.
## A quick smoke run: make bench BENCH_ARGS="--reps 1 --seconds 3 --no-scaling"
BENCH_ARGS ?=
bench: deps
	python3 benches/load/run.py $(BENCH_ARGS)

## bench-micro: criterion benches of the per-request functions
bench-micro: deps
	$(CARGO) bench

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
