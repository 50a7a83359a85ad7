#!/usr/bin/env bash
# The default image built in a VM from Debian's archive (`images
# build-default --in-vm`, the way a Mac gets it) against the host build of
# the same recipe (mmdebstrap), side by side in one run, each in a fresh
# HEYO_HOME:
#   1. the host build (mmdebstrap downloads its packages)
#   2. the in-VM build, packages not yet cached (downloads included)
#   3. the in-VM build again (--force): every package from the cache
# Each build's stages are printed with the second they began, so the
# steps that are CPU-bound in the guest (dpkg's configure, the ext4 write)
# can be told from the host's downloads. Goal: (3) <= 10 min under TCG on
# 2 cores (SKIP_CACHED=1 leaves (3) out). Needs mmdebstrap for (1); run as root or as a user set up by
# install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/heyvm" ./cmd/heyvm
export HEYVM_AUTO_WARM=0
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# stamped runs a build, printing each line of its progress with the
# seconds since it began; it leaves the time taken in $took.
stamped() {
	local label=$1 home=$2 t
	shift 2
	echo "== $label"
	t=$(now)
	if ! HEYO_HOME=$home "$work/heyvm" images build-default "$@" 2>&1 >/dev/null | while IFS= read -r line; do
		printf '  %6.1fs  %s\n' "$(since "$t")" "$line"
	done; then
		echo "$label failed" >&2
		exit 1
	fi
	took=$(since "$t")
	echo "  $label: ${took}s"
}

mkdir -p "$work/host" "$work/vm"
stamped "host build (mmdebstrap)" "$work/host"; host=$took
stamped "in-VM build, packages downloaded" "$work/vm" --in-vm; cold=$took
if [ -n "${SKIP_CACHED:-}" ]; then
	# The third build differs from the second by the downloads only (about
	# a second here): SKIP_CACHED=1 leaves it out.
	cached=$cold
else
	stamped "in-VM build, packages cached" "$work/vm" --in-vm --force; cached=$took
fi
echo
echo "host build ${host}s; in-VM build ${cold}s with downloads, ${cached}s from the cache"
echo "in-VM (cached) / host: $(ratio "$cached" "$host") (goal: in-VM <= 600 s under TCG)"
echo "sizes: host $(du -sh --apparent-size "$work/host/images/"*/debian:12/rootfs.img | cut -f1) apparent, $(du -sh "$work/host/images/"*/debian:12 | cut -f1) on disk;" \
	"in-VM $(du -sh "$work/vm/images/"*/debian:12 | cut -f1) on disk"
