# heyvm build. On macOS the binary must be signed with the virtualization
# entitlement (build/heyvm.entitlements) or Virtualization.framework
# refuses to start VMs; `make` signs ad hoc. On Linux nothing is signed.
GO        ?= go
BIN       ?= bin/heyvm
PREFIX    ?= /usr/local
ENTITLE   := build/heyvm.entitlements
UNAME_S   := $(shell uname -s)

.PHONY: all build debug sign sign-debug install test darwincheck clean

all: build sign

build:
	$(GO) build -trimpath -ldflags "-s -w" -o $(BIN) ./cmd/heyvm

# A debug build keeps symbols; sign it with `make sign-debug`.
debug:
	$(GO) build -o $(BIN) ./cmd/heyvm

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
	rm -rf bin
