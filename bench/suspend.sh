#!/usr/bin/env bash
# Suspend and resume, side by side in one run, on one sandbox (384 MiB):
#   1. `heyvm stop --suspend` (save the VM), then `heyvm start` (resume)
#      and the first `heyvm exec` answer
#   2. `heyvm stop` (poweroff), then `heyvm start --cold` (boot the disk)
#      and the first `heyvm exec` answer: the reference
# Reported: medians of each, and resume-to-exec as a fraction of the cold
# start-to-exec (the warm-start issue's goal for restores: <= 0.25x and
# <= 1.0 s).
# Run where `heyvm images build-default` has run (HEYO_HOME as there).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
work=$(mktemp -d)
home=$(mktemp -d)
cleanup() {
	HEYO_HOME=$home "$work/heyvm" rm --force --yes bench-suspend >/dev/null 2>&1 || true
	rm -rf "$work" "$home"
}
trap cleanup EXIT
go build -o "$work/heyvm" ./cmd/heyvm
src=${HEYO_HOME:-$HOME/.heyo}
ln -s "$src/images" "$home/images"
export HEYO_HOME=$home
heyvm="$work/heyvm"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
"$heyvm" create --name bench-suspend --memory 384 >/dev/null
"$heyvm" exec bench-suspend -- true
save=() resume=() stop=() cold=() size=0
for i in $(seq "$runs"); do
	t=$(now); out=$("$heyvm" stop --suspend bench-suspend); save+=("$(since "$t")")
	size=$(echo "$out" | sed -n 's/.*(\([0-9]*\) MB saved).*/\1/p')
	t=$(now); "$heyvm" start bench-suspend >/dev/null; "$heyvm" exec bench-suspend -- true; resume+=("$(since "$t")")
	t=$(now); "$heyvm" stop bench-suspend >/dev/null; stop+=("$(since "$t")")
	t=$(now); "$heyvm" start --cold bench-suspend >/dev/null; "$heyvm" exec bench-suspend -- true; cold+=("$(since "$t")")
done
ms=$(printf '%s\n' "${save[@]}" | median); mr=$(printf '%s\n' "${resume[@]}" | median)
mp=$(printf '%s\n' "${stop[@]}" | median); mc=$(printf '%s\n' "${cold[@]}" | median)
echo "stop --suspend: ${ms}s (${size} MB saved); stop (poweroff): ${mp}s"
echo "start (resume) to first exec: ${mr}s; start --cold to first exec: ${mc}s; ratio $(awk -v a="$mr" -v b="$mc" 'BEGIN { printf "%.2f", a / b }')"
