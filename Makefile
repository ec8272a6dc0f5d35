# banger — common developer tasks. `make help` lists them.
GO      ?= go
BIN     ?= bin
VERSION ?= 0.1.0-dev
LDFLAGS := -s -w -X github.com/bangerdev/banger/internal/buildinfo.Version=$(VERSION)

.PHONY: help build setup test test-short lint bench golden clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build banger, bangerd and the static banger-agent into ./bin
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/banger ./cmd/banger
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/bangerd ./cmd/bangerd
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/banger-agent ./cmd/banger-agent

setup: ## install everything banger needs on Debian 12 and run a first VM
	./scripts/setup.sh

test: ## run every test, unit and end-to-end (needs the setup script's packages)
	$(GO) test -count=1 -timeout 75m ./...

test-short: ## run the fast unit tests only
	$(GO) test -short ./...

lint: ## gofmt + go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: ## run the committed benchmarks (slow; prints ratios against the peers)
	$(GO) run ./bench/imagepull
	$(GO) run ./bench/vmboot
	$(GO) run ./bench/workspace
	$(GO) run ./bench/forward

golden: ## build the golden image debian-bookworm, check it, bundle it into ./dist (slow; opt-in)
	./scripts/build-golden.sh

clean: ## remove build outputs
	rm -rf $(BIN)
