# osguard: the two entry points are `make demo` and `make test`; both run
# `make deps` first, which installs what is missing and is fast otherwise.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH):/usr/sbin:/sbin
export CGO_ENABLED ?= 0
GO ?= go

.PHONY: deps test demo build vet fmt bench

deps:
	@scripts/install-deps
	@scripts/fetch-artifacts

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo devel)

build:
	@mkdir -p bin
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/osguard ./cmd/osguard
	$(GO) build -trimpath -o bin/osguard-init ./cmd/osguard-init

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))" || { gofmt -l .; echo "gofmt: files above need formatting" >&2; exit 1; }
	$(GO) vet ./...

# Every test, the VM tests included. -p 2: two packages at a time on this
# 2-core machine; each VM uses one CPU.
test: deps vet
	$(GO) test -p 2 -timeout 30m -count=1 ./...

demo: deps build
	@scripts/demo

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...
