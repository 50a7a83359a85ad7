#!/usr/bin/env bash
# Run GoReleaser at the version .goreleaser.yaml is written for, installed
# from the Go module proxy on first use (`go install`, no GitHub download;
# it packages with nfpm v2.45.2). The install compiles GoReleaser, once
# per machine: about 6 minutes of CPU (10 minutes' wall time on 2 busy
# cores), seconds with a warm Go build cache; the binary is kept in
# $HEYVM_TOOLS_DIR (default /var/tmp/heyvm-tools, beside the test image
# cache). Usage: scripts/goreleaser.sh ARGS... (e.g. check).
set -euo pipefail
GORELEASER_VERSION=v2.15.1
dir="${HEYVM_TOOLS_DIR:-/var/tmp/heyvm-tools}/goreleaser-$GORELEASER_VERSION"
if [ ! -x "$dir/goreleaser" ]; then
	echo "goreleaser.sh: installing goreleaser $GORELEASER_VERSION into $dir (once)" >&2
	mkdir -p "$dir"
	tmp=$(mktemp -d "$dir/.install-XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	# Outside any module, with its own go.sum: heyvm's go.mod is not involved.
	(cd "$tmp" && GOBIN="$tmp" GOFLAGS= go install "github.com/goreleaser/goreleaser/v2@$GORELEASER_VERSION")
	mv -f "$tmp/goreleaser" "$dir/goreleaser" # atomic: concurrent installs both end well
	rm -rf "$tmp"
	trap - EXIT
fi
exec "$dir/goreleaser" "$@"
