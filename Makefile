# edgeprov — build, test, demo. `make test` installs what the tests need (Debian
# packages, the pinned Node SDKs, Go modules) idempotently, then runs them all.
SHELL := /bin/bash
GO ?= go
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
STATICCHECK_VERSION := v0.8.2
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/edgeprov/edgeprov/daemon/app.Version=$(VERSION) \
           -X github.com/edgeprov/edgeprov/daemon/ctl.Version=$(VERSION) \
           -X github.com/edgeprov/edgeprov/agent/cli.Version=$(VERSION)

.PHONY: all build setup test test-race lint bench bench-import fuzz demo clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./daemon/cmd/... ./agent/cmd/...

setup:
	bash testenv/setup.sh

test: setup
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) build ./...
	$(GO) test -count=1 -timeout 20m ./...

test-race: setup
	$(GO) test -race -count=1 -timeout 30m ./...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) vet ./...
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	staticcheck ./...

# Hot-path benchmarks (numbers in README's performance section).
# daemon/directory's benchmarks fill a store with 1,000,000 enrollments first
# (EDGEPROV_BENCH_ENROLLMENTS=N for fewer).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./daemon/... ./tpm/... ./hsm/... ./agent/...

# Time and peak memory of `edgeprovctl import` of N (default 1,000,000)
# individual enrollments into a daemon on bbolt; minutes, not part of test.
bench-import: build
	bash testenv/import-bench.sh

# A short fuzzing pass over every parser of untrusted bytes; new corpus entries
# land in the packages' testdata/fuzz.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./daemon/dpsapi/sas/
	$(GO) test -run '^$$' -fuzz '^FuzzRegisterBody$$' -fuzztime $(FUZZTIME) ./daemon/endpoint/https/
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./daemon/attestation/x509chain/
	$(GO) test -run '^$$' -fuzz '^FuzzParseCSR$$' -fuzztime $(FUZZTIME) ./daemon/issuance/
	$(GO) test -run '^$$' -fuzz '^FuzzParseCertificate$$' -fuzztime $(FUZZTIME) ./daemon/enrollment/
	$(GO) test -run '^$$' -fuzz '^FuzzServiceBodies$$' -fuzztime $(FUZZTIME) ./daemon/serviceapi/
	$(GO) test -run '^$$' -fuzz '^FuzzContinuationToken$$' -fuzztime $(FUZZTIME) ./daemon/serviceapi/
	$(GO) test -run '^$$' -fuzz '^FuzzImportReaders$$' -fuzztime $(FUZZTIME) ./daemon/ctl/
	$(GO) test -run '^$$' -fuzz '^FuzzParseResponse$$' -fuzztime $(FUZZTIME) ./daemon/allocation/

# Builds the binaries, initialises a daemon in a scratch directory with the
# example config and catalog, provisions the example device with the agent,
# prints its assignment, and stops the daemon.
demo: build
	bash testenv/demo.sh

clean:
	rm -rf bin tmp
