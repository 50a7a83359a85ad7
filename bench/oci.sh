#!/usr/bin/env bash
# OCI image transfer, each against a reference run side by side:
#   1. pull of the default image from a loopback registry  vs  cp --sparse=always of its files
#   2. a push with nothing new                              vs  the first push
#   3. export + import through a tar                        vs  cp --sparse=always
# and the floor under the pull: its blobs decoded and hashed in memory on
# every core (bench/zstdfloor), with no network and no writes.
# Run on a machine where `heyvm images build-default` has run (HEYO_HOME as there).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
work=$(mktemp -d)
regpid=
cleanup() { [ -n "$regpid" ] && kill "$regpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
go build -o "$work/heyvm" ./cmd/heyvm
go build -o "$work/registry" ./bench/registry
go build -o "$work/zstdfloor" ./bench/zstdfloor
heyvm="$work/heyvm"
src=${HEYO_HOME:-$HOME/.heyo}
img="$src/images/qemu/debian:12"
[ -f "$img/image.yaml" ] || { echo "no default image in $src: run heyvm images build-default" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

"$work/registry" >"$work/addr" & regpid=$!
for _ in $(seq 50); do [ -s "$work/addr" ] && break; sleep 0.1; done
host=$(cat "$work/addr")
# A home of its own whose images are the source's, so the push cache is fresh.
mkdir -p "$work/src"; ln -s "$img/../.." "$work/src/images"
first=() again=() pull=() cpt=() exim=()
for i in $(seq "$runs"); do
	ref="$host/bench/debian:$i"
	rm -rf "$work/src/cache"
	t0=$(now); HEYO_HOME="$work/src" "$heyvm" images push --insecure debian:12 "$ref" >/dev/null; first+=("$(since "$t0")")
	t0=$(now); HEYO_HOME="$work/src" "$heyvm" images push --insecure debian:12 "$ref" >/dev/null; again+=("$(since "$t0")")

	rm -rf "$work/dst" "$work/cp"; mkdir -p "$work/cp"; sync
	t0=$(now); HEYO_HOME="$work/dst" "$heyvm" images pull --insecure "$ref" >/dev/null; pull+=("$(since "$t0")")
	t0=$(now); cp --sparse=always "$img"/{vmlinuz,initrd,rootfs.img,image.yaml} "$work/cp/"; cpt+=("$(since "$t0")")

	rm -rf "$work/dst2" "$work/x.tar"
	t0=$(now)
	HEYO_HOME="$work/src" "$heyvm" images export debian:12 "$work/x.tar" >/dev/null
	HEYO_HOME="$work/dst2" "$heyvm" images import "$work/x.tar" >/dev/null
	exim+=("$(since "$t0")")
done
m_first=$(printf '%s\n' "${first[@]}" | median); m_again=$(printf '%s\n' "${again[@]}" | median)
m_pull=$(printf '%s\n' "${pull[@]}" | median); m_cp=$(printf '%s\n' "${cpt[@]}" | median)
m_exim=$(printf '%s\n' "${exim[@]}" | median)
echo "image: $(du -sm "$img" | cut -f1) MiB on disk, $(du -sm --apparent-size "$img" | cut -f1) MiB apparent; tar: $(du -sm "$work/x.tar" | cut -f1) MiB"
echo "pull from loopback registry: ${m_pull}s   cp --sparse=always: ${m_cp}s   speed vs cp: $(ratio "$m_cp" "$m_pull")x (goal >= 0.5x)"
echo "push, nothing new: ${m_again}s   first push: ${m_first}s   ratio: $(ratio "$m_again" "$m_first")"
echo "export + import: ${m_exim}s   vs cp: $(ratio "$m_exim" "$m_cp")x cp's time"
echo "pulled image on disk: $(du -sm "$work/dst/images/qemu/debian:$runs" | cut -f1) MiB"
mkdir "$work/layout" && tar -xf "$work/x.tar" -C "$work/layout"
floor=$(for _ in $(seq "$runs"); do "$work/zstdfloor" "$work/layout" | cut -d' ' -f1; done | median)
echo "floor: zstd decode + sha256 of the blobs in memory on $(nproc) cores: ${floor}s, so at best $(ratio "$m_cp" "$floor")x cp's speed"
