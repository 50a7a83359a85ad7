#!/usr/bin/env bash
# Port forwards under a burst, side by side in one run: 500 requests, 50 at
# a time, to busybox httpd in one sandbox (listen backlog 9), through
#   1. heyvm's forward (the owner, over SSH direct-tcpip)
#   2. OpenSSH's ssh -L to the same sandbox (the reference)
# Goal: heyvm at most 1.2x OpenSSH's time, with no failures.
# Run where `heyvm images build-default` has run (HEYO_HOME as there).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
work=$(mktemp -d)
home=$(mktemp -d)
sshpid=
cleanup() {
	[ -n "$sshpid" ] && kill "$sshpid" 2>/dev/null
	HEYO_HOME=$home "$work/heyvm" rm --force --yes bench-ports >/dev/null 2>&1 || true
	rm -rf "$work" "$home"
}
trap cleanup EXIT
go build -o "$work/heyvm" ./cmd/heyvm
go build -o "$work/httpburst" ./bench/httpburst
src=${HEYO_HOME:-$HOME/.heyo}
ln -s "$src/images" "$home/images"
export HEYO_HOME=$home
heyvm="$work/heyvm"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p1=$(freeport); p2=$(freeport)
"$heyvm" create --name bench-ports --memory 1024 --port "$p1:8080" >/dev/null
"$heyvm" exec bench-ports -- sh -c 'mkdir -p /srv && echo ok > /srv/index.html && (busybox httpd -p 8080 -h /srv &)'
"$heyvm" ssh-config bench-ports >"$work/ssh_config"
ssh -F "$work/ssh_config" -N -L "127.0.0.1:$p2:127.0.0.1:8080" bench-ports & sshpid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$p2") 2>/dev/null && break; sleep 0.2; done
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ours=() theirs=() fo=0 ft=0
for i in $(seq "$runs"); do
	read -r t f < <("$work/httpburst" -port "$p1" -n 500 -c 50); ours+=("$t"); fo=$((fo + f))
	read -r t f < <("$work/httpburst" -port "$p2" -n 500 -c 50); theirs+=("$t"); ft=$((ft + f))
done
mo=$(printf '%s\n' "${ours[@]}" | median); mt=$(printf '%s\n' "${theirs[@]}" | median)
echo "500 requests, 50 at a time: heyvm forward ${mo}s ($fo failed in $runs runs), ssh -L ${mt}s ($ft failed); ratio $(awk -v a="$mo" -v b="$mt" 'BEGIN { printf "%.2f", a / b }') (goal <= 1.2)"
