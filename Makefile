# pagewire: `make demo` runs the main job, `make test` the tests; both set
# up what they need first (scripts/setup.sh).

GO        ?= go
FUZZTIME  ?= 30s
BENCHTIME ?= 5x
# The vmbus benchmarks move single packets: 5 of them measure nothing.
VMBUS_BENCHTIME ?= 1s
COUNT     ?= 1
# BenchmarkGateway migrates a 1 GiB guest 15 times per iteration.
GW_BENCHTIME ?= 1x
BIN       := bin
# libzstd: zstd on the system's libzstd (cgo; scripts/setup.sh installs
# libzstd-dev) instead of pure Go, for the CLI, the tests and the
# benchmarks. TAGS= builds everything pure Go.
TAGS      ?= libzstd

.PHONY: default setup build demo test lint check bench fuzz lab lab-quick clean

default: lint test

setup:
	@scripts/setup.sh

PLUGINS := nocomp zlib zstd lz4

build: setup
	$(GO) build -tags '$(TAGS)' -o $(BIN)/pagewire ./cmd/pagewire
	$(GO) build -o $(BIN)/pagewire-lab ./cmd/pagewire-lab
	@mkdir -p $(BIN)/plugins
	@for p in $(PLUGINS); do \
		echo "GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o $(BIN)/plugins/$$p.wasm ./plugins/$$p/plugin"; \
		GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o $(BIN)/plugins/$$p.wasm ./plugins/$$p/plugin || exit 1; \
		echo "$(GO) build -tags '$(TAGS)' -o $(BIN)/plugins/$$p ./plugins/$$p/plugin"; \
		$(GO) build -tags '$(TAGS)' -o $(BIN)/plugins/$$p ./plugins/$$p/plugin || exit 1; \
	done
	scripts/build-c-plugins.sh $(BIN)/plugins

demo: build
	$(BIN)/pagewire demo

# -race everywhere; every wait in the tests is bounded well below this.
# Allocation counts are checked without -race, whose instrumentation
# allocates (those tests are built only then).
test: setup
	$(GO) vet -tags '$(TAGS)' ./...
	$(GO) test -tags '$(TAGS)' -timeout 5m -run 'Allocs' ./plugins/...
	$(GO) test -tags '$(TAGS)' -race -timeout 15m ./...

lint:
	$(GO) vet ./...
	$(GO) vet -tags '$(TAGS)' ./...
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

check: lint test

# Side-by-side benchmarks: each compares pagewire with its baseline in the
# same run (see the benchmark's doc comment). COUNT=10 for benchstat.
bench: setup
	$(GO) test -tags '$(TAGS)' -run '^$$' -bench . -skip 'BenchmarkGateway' -benchtime $(BENCHTIME) -count $(COUNT) $$($(GO) list ./... | grep -v 'pagewire/vmbus$$')
	$(GO) test -tags '$(TAGS)' -run '^$$' -bench . -benchtime $(VMBUS_BENCHTIME) -count $(COUNT) ./vmbus
	$(GO) test -tags '$(TAGS)' -run '^$$' -bench 'BenchmarkGateway' -benchtime $(GW_BENCHTIME) -count $(COUNT) -timeout 60m ./cmd/pagewire

# The migration lab (docs/lab.md): running guests migrated over an
# emulated link, QEMU 7.2 and 10.0 directly and through the gateways.
# LAB_FLAGS picks a part of the matrix (bin/pagewire-lab --help).
LAB_FLAGS ?=
lab: build
	$(BIN)/pagewire-lab --pagewire $(BIN)/pagewire $(LAB_FLAGS)

# A few minutes: the small-update guest at 1 Gbit/s, QEMU 10 zstd with TLS
# against the gateways with zstd and lz4.
lab-quick: build
	$(BIN)/pagewire-lab --quick --pagewire $(BIN)/pagewire $(LAB_FLAGS)

fuzz: setup
	FUZZTIME=$(FUZZTIME) TAGS='$(TAGS)' scripts/fuzz.sh

clean:
	rm -rf $(BIN)
