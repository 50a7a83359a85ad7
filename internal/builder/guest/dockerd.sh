#!/bin/bash
# heyvm builder: start Docker's engine, or restart it when its settings
# ($1, the whole daemon.json) changed. The builder image has no service
# manager: heyvm starts the engine on demand over SSH.
set -eu
conf=$1
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup
# overlay2 needs the overlay module; image imports use loop devices.
modprobe overlay 2>/dev/null || true
modprobe loop 2>/dev/null || true
mkdir -p /etc/docker
restart=
if [ "$(cat /etc/docker/daemon.json 2>/dev/null)" != "$conf" ]; then
	printf '%s\n' "$conf" >/etc/docker/daemon.json.tmp
	mv /etc/docker/daemon.json.tmp /etc/docker/daemon.json
	restart=1
fi
pid=$(cat /run/heyvm-dockerd.pid 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
	if [ -z "$restart" ] && docker info >/dev/null 2>&1; then
		exit 0
	fi
	kill "$pid"
	for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
fi
setsid -f sh -c 'echo $$ >/run/heyvm-dockerd.pid; exec dockerd >/var/log/dockerd.log 2>&1 </dev/null'
for _ in $(seq 300); do
	docker info >/dev/null 2>&1 && exit 0
	sleep 0.2
done
echo "the builder's Docker engine did not start; its log ends:" >&2
tail -n 20 /var/log/dockerd.log >&2
exit 1
