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

# Debian packages (make deb): nfpm, pinned, run from the module proxy.
NFPM := github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
DEB_ARCH ?= $(shell $(GO) env GOARCH)
# A Debian version: 0.1.0~git<commit date>.<commit>, sorting before 0.1.0.
DEB_VERSION ?= 0.1.0~git$(shell git log -1 --format=%cd.%h --date=format:%Y%m%d 2>/dev/null || echo 0)
DEB_OUT ?= dist

.PHONY: all build setup test test-race lint bench bench-import fuzz demo deb clean

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
	$(GO) test -run '^$$' -fuzz '^FuzzParsePublic$$' -fuzztime $(FUZZTIME) ./tpm/dpsauth/
	$(GO) test -run '^$$' -fuzz '^FuzzParseAuthenticationKey$$' -fuzztime $(FUZZTIME) ./tpm/dpsauth/
	$(GO) test -run '^$$' -fuzz '^FuzzPresented$$' -fuzztime $(FUZZTIME) ./daemon/attestation/tpm/
	$(GO) test -run '^$$' -fuzz '^FuzzParseResponse$$' -fuzztime $(FUZZTIME) ./daemon/allocation/
	$(GO) test -run '^$$' -fuzz '^FuzzParseMQTTUsername$$' -fuzztime $(FUZZTIME) ./daemon/dpsapi/
	$(GO) test -run '^$$' -fuzz '^FuzzParseMQTTRequestTopic$$' -fuzztime $(FUZZTIME) ./daemon/dpsapi/

# Builds the binaries, initialises a daemon in a scratch directory with the
# example config and catalog, provisions the example device with the agent,
# prints its assignment, and stops the daemon.
demo: build
	bash testenv/demo.sh

# edgeprovd_<ver>_<arch>.deb (edgeprovd, edgeprovctl, units, sysusers and
# tmpfiles, config as conffiles) and edgeprov-agent_<ver>_<arch>.deb into
# $(DEB_OUT). Built with cgo (PKCS#11 tokens: the agent's device keys, the
# daemon's sealing and issuing keys) for the host's architecture; stripped.
deb:
	rm -rf $(DEB_OUT)/bin && mkdir -p $(DEB_OUT)/bin
	CGO_ENABLED=1 GOARCH=$(DEB_ARCH) $(GO) build -trimpath -buildmode=pie -ldflags '-s -w $(LDFLAGS)' -o $(DEB_OUT)/bin/ ./daemon/cmd/... ./agent/cmd/...
	for p in edgeprovd edgeprov-agent; do \
		DEB_ARCH=$(DEB_ARCH) DEB_VERSION=$(DEB_VERSION) DEB_BIN=$(DEB_OUT)/bin \
			$(GO) run $(NFPM) package --config packaging/nfpm-$$p.yaml --packager deb \
			--target $(DEB_OUT)/$${p}_$(DEB_VERSION)_$(DEB_ARCH).deb || exit 1; \
	done
	rm -rf $(DEB_OUT)/bin

clean:
	rm -rf bin tmp dist
