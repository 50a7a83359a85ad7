#!/usr/bin/env bash
# `heyvm images build`, side by side in one run, for a small Dockerfile
# FROM default (a RUN, a COPY, an ENV):
#   1. the first build: a fresh builder VM (created and booted), the
#      default image imported into its engine, every step run, the
#      conversion to a bootable ext4
#   2. a changed build (--no-cache) in the running builder: every step
#      run again and converted
#   3. the unchanged rebuild, against the first: goal <= 10%
# and the conversion's share of each (heyvm's last line says it). Run where `heyvm images
# build-default` has run (HEYO_HOME as there); the builder image is made
# there too if missing (not timed).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
home=$(mktemp -d)
cleanup() {
	HEYO_HOME=$home "$work/heyvm" images prune >/dev/null 2>&1 || true
	rm -rf "$work" "$home"
}
trap cleanup EXIT
go build -o "$work/heyvm" ./cmd/heyvm
src=${HEYO_HOME:-$HOME/.heyo}
ln -s "$src/images" "$home/images"
export HEYO_HOME=$home HEYVM_AUTO_WARM=0
heyvm="$work/heyvm"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

mkdir -p "$work/ctx"
printf 'hello from the build context\n' >"$work/ctx/greeting.txt"
cat >"$work/ctx/Dockerfile" <<'DOCKERFILE'
FROM default
ENV APP=/srv/app
RUN mkdir -p $APP && useradd -m app && echo built > $APP/stamp
COPY greeting.txt /srv/app/
DOCKERFILE

# The builder image is made once per heyvm version: not part of a build.
t=$(now); "$heyvm" images build -f "$work/ctx/Dockerfile" --name bench-warmup --size-mb 2048 >/dev/null 2>"$work/warmup.log" || { cat "$work/warmup.log"; exit 1; }
"$heyvm" images prune >/dev/null 2>&1
"$heyvm" images rm bench-warmup >/dev/null
echo "(builder image ready; warm-up build $(since "$t")s)"

t=$(now); "$heyvm" images build -f "$work/ctx/Dockerfile" --name bench-img --size-mb 2048 >/dev/null 2>"$work/first.log"; first=$(since "$t")
echo "first build (fresh builder VM): ${first}s; $(tail -n 1 "$work/first.log")"
t=$(now); "$heyvm" images build -f "$work/ctx/Dockerfile" --name bench-img --size-mb 2048 --no-cache >/dev/null 2>"$work/changed.log"; changed=$(since "$t")
echo "changed build (--no-cache, builder running): ${changed}s; $(tail -n 1 "$work/changed.log")"
t=$(now); "$heyvm" images build -f "$work/ctx/Dockerfile" --name bench-img --size-mb 2048 >/dev/null 2>"$work/again.log"; again=$(since "$t")
echo "unchanged rebuild: ${again}s; $(tail -n 1 "$work/again.log")"
echo "unchanged rebuild / first build: $(ratio "$again" "$first") (goal <= 0.10)"
"$heyvm" images rm bench-img >/dev/null
