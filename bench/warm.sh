#!/usr/bin/env bash
# Warm start and suspend/resume, side by side in one run (1024 MiB, 2 CPUs):
#   1. create -> first exec result: restored from the image's ready
#      snapshot, against `create --cold` (a boot): goal <= 0.25x and <= 1.0 s
#   2. stop --suspend, and start (resume) -> first exec result, against
#      stop (poweroff) and start --cold -> first exec result
#   3. the disk clone against cp --sparse=always (bench/clonetime)
# and `heyvm wt --detach` of a new branch to its first exec, warm.
# Run where `heyvm images build-default` has run (HEYO_HOME as there).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
work=$(mktemp -d)
home=$(mktemp -d)
cleanup() {
	for n in $(HEYO_HOME=$home "$work/heyvm" list --json 2>/dev/null | sed -n 's/.*"name": "\([^"]*\)".*/\1/p'); do
		HEYO_HOME=$home "$work/heyvm" rm --force --yes "$n" >/dev/null 2>&1 || true
	done
	rm -rf "$work" "$home"
}
trap cleanup EXIT
go build -o "$work/heyvm" ./cmd/heyvm
go build -o "$work/clonetime" ./bench/clonetime
src=${HEYO_HOME:-$HOME/.heyo}
ln -s "$src/images" "$home/images"
export HEYO_HOME=$home HEYVM_AUTO_WARM=0
heyvm="$work/heyvm"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
shape=(--memory 1024 --cpus 2)

t=$(now); "$heyvm" images warm default "${shape[@]}" >/dev/null; echo "images warm (boot, save): $(since "$t")s"
warm=() cold=()
for i in $(seq "$runs"); do
	t=$(now); "$heyvm" create --name "w$i" "${shape[@]}" >/dev/null; "$heyvm" exec "w$i" -- true; warm+=("$(since "$t")")
	"$heyvm" rm --force --yes "w$i" >/dev/null
	t=$(now); "$heyvm" create --cold --name "c$i" "${shape[@]}" >/dev/null; "$heyvm" exec "c$i" -- true; cold+=("$(since "$t")")
	"$heyvm" rm --force --yes "c$i" >/dev/null
done
mw=$(printf '%s\n' "${warm[@]}" | median); mc=$(printf '%s\n' "${cold[@]}" | median)
echo "create->exec: warm ${mw}s, cold ${mc}s, ratio $(ratio "$mw" "$mc") (goal <= 0.25 and <= 1.0 s)"

# heyvm wt of a new branch, --detach, to a command reading its worktree:
# the worktree's share is hot-plugged into the restored VM.
repo="$work/repo"
git init -q "$repo" && echo hi >"$repo/f" && git -C "$repo" add f && git -C "$repo" -c user.email=b@b -c user.name=b commit -qm b
wt=()
for i in $(seq "$runs"); do
	t=$(now); (cd "$repo" && "$heyvm" wt "b$i" --detach "${shape[@]}" >/dev/null 2>&1); "$heyvm" exec "repo-b$i" -- cat /workspace/f >/dev/null; wt+=("$(since "$t")")
	"$heyvm" rm --force --yes "repo-b$i" >/dev/null
done
echo "wt --detach->exec (warm, worktree hot-plugged): $(printf '%s\n' "${wt[@]}" | median)s"

"$heyvm" create --name s "${shape[@]}" >/dev/null
"$heyvm" exec s -- true
save=() resume=() stop=() boot=() size=0
for i in $(seq "$runs"); do
	t=$(now); out=$("$heyvm" stop --suspend s); save+=("$(since "$t")")
	size=$(echo "$out" | sed -n 's/.*(\([0-9]*\) MB saved).*/\1/p')
	t=$(now); "$heyvm" start s >/dev/null; "$heyvm" exec s -- true; resume+=("$(since "$t")")
	t=$(now); "$heyvm" stop s >/dev/null; stop+=("$(since "$t")")
	t=$(now); "$heyvm" start --cold s >/dev/null; "$heyvm" exec s -- true; boot+=("$(since "$t")")
done
ms=$(printf '%s\n' "${save[@]}" | median); mr=$(printf '%s\n' "${resume[@]}" | median)
mp=$(printf '%s\n' "${stop[@]}" | median); mb=$(printf '%s\n' "${boot[@]}" | median)
echo "stop --suspend ${ms}s (${size} MB saved), stop (poweroff) ${mp}s"
echo "start->exec: resume ${mr}s, cold ${mb}s, ratio $(ratio "$mr" "$mb")"

img="$src/images/qemu/debian:12"
read -r _ hc method < <("$work/clonetime" "$img/rootfs.img" "$work" | head -1)
cpt=$("$work/clonetime" "$img/rootfs.img" "$work" | awk '$1 == "cp" { print $2 }')
echo "clone: heyvm ${hc}s ($method), cp --sparse=always ${cpt}s, ratio $(ratio "$hc" "$cpt") (goal <= 50 ms)"
