# heyvm build. On macOS the binary must be signed with the virtualization
# entitlement (build/heyvm.entitlements) or Virtualization.framework
# refuses to start VMs; `make` signs ad hoc. On Linux nothing is signed.
GO        ?= go
BIN       ?= bin/heyvm
PREFIX    ?= /usr/local
ENTITLE   := build/heyvm.entitlements
UNAME_S   := $(shell uname -s)
# What `heyvm version` shows, set as GoReleaser sets it (internal/version).
VERSION   := $(shell git describe --tags --dirty 2>/dev/null || echo devel)
COMMIT    := $(shell git rev-parse HEAD 2>/dev/null)
DATE      := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
VPKG      := github.com/heyvm/heyvm/internal/version
VFLAGS    := -X $(VPKG).version=$(VERSION) -X $(VPKG).commit=$(COMMIT) -X $(VPKG).date=$(DATE)

.PHONY: all build kubevirt debug sign sign-debug install docs test darwincheck clean

all: build sign

build:
	$(GO) build -trimpath -ldflags "-s -w $(VFLAGS)" -o $(BIN) ./cmd/heyvm

# heyvm-kubevirt: heyvm's commands for KubeVirt contexts (the cluster client
# would double heyvm's size), beside bin/heyvm, where heyvm looks for it.
kubevirt:
	$(GO) build -trimpath -ldflags "-s -w $(VFLAGS)" -o $(dir $(BIN))heyvm-kubevirt ./cmd/heyvm-kubevirt

# A debug build keeps symbols; sign it with `make sign-debug`.
debug:
	$(GO) build -ldflags "$(VFLAGS)" -o $(BIN) ./cmd/heyvm

# Man pages and shell completions from the command tree, in build/gen.
docs:
	$(GO) run ./tools/gendocs -out build/gen -version $(VERSION)

sign:
ifeq ($(UNAME_S),Darwin)
	codesign --force --sign - --entitlements $(ENTITLE) $(BIN)
else
	@echo "not macOS: $(BIN) needs no signing"
endif

sign-debug: sign

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/heyvm
ifeq ($(UNAME_S),Darwin)
	codesign --force --sign - --entitlements $(ENTITLE) $(DESTDIR)$(PREFIX)/bin/heyvm
endif

test:
	./scripts/test.sh

# Type-check the cgo-only macOS backend for darwin/arm64 from any host.
darwincheck:
	$(GO) run ./tools/darwincheck ./cmd/heyvm

clean:
	rm -rf bin build/gen dist
