#!/usr/bin/env bash
# heyvm's whole test suite: static checks, the macOS cross-build, unit
# tests and (as root, with qemu installed) integration tests on real VMs.
set -euo pipefail
cd "$(dirname "$0")/.."
# The integration tests run as root (they create the ordinary users the
# rootless tests run as): a user who may use sudo gets it asked for, with
# this PATH (Go). Without root the integration tests skip, saying why.
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && [ -z "${HEYVM_TEST_NO_SUDO:-}" ]; then
	exec sudo env "PATH=$PATH" ${HEYVM_TEST_IMAGE_CACHE:+"HEYVM_TEST_IMAGE_CACHE=$HEYVM_TEST_IMAGE_CACHE"} "$0" "$@"
fi
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== darwin/arm64 build of the shared code"
GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 go build ./...
echo "== darwin/arm64 type check of the cgo-only apple_virt backend"
go run ./tools/darwincheck ./cmd/heyvm
echo "== KubeVirt conformance: the objects heyvm sends, against KubeVirt's and CDI's own schemas and admission code"
# A module of its own (its dependencies never reach heyvm's); its first
# compile takes about 4 minutes on 2 cores, later ones seconds.
(cd internal/kubevirt/conformance && go test -count=1 ./...)
echo "== release: the Linux archives and .debs (GoReleaser snapshot; test/release checks them)"
# The pinned GoReleaser is installed once per machine (scripts/goreleaser.sh).
./scripts/release-snapshot.sh
export HEYVM_TEST_RELEASE=1 HEYVM_TEST_DIST="$PWD/dist"
echo "== go test"
# An sshd for the KubeVirt protocol test (SSH over the portforward client):
# the system's, or Debian's unpacked into a cache folder, started by nothing.
if [ -z "${HEYVM_TEST_SSHD:-}" ]; then
	if [ "$(id -u)" = 0 ]; then sshd_dir=/var/tmp/heyvm-test-sshd; else sshd_dir=""; fi
	HEYVM_TEST_SSHD=$(HEYVM_TEST_SSHD_DIR=$sshd_dir ./scripts/test-sshd.sh) || echo "no sshd for the KubeVirt portforward test: it will skip"
	export HEYVM_TEST_SSHD
fi
# The integration tests share one image build per machine.
export HEYVM_TEST_IMAGE_CACHE="${HEYVM_TEST_IMAGE_CACHE:-/var/tmp/heyvm-test-cache}"
go test -count=1 -timeout 85m -v ./...
