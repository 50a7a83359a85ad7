#!/bin/bash
# heyvm builder: get Docker's engine ready for a build, in one SSH round
# trip (every docker command costs most of a second under emulation).
#
#   prepare.sh DAEMON_JSON [IMAGE_DIR TAG]...
#
# Starts the engine, or restarts it when its settings (the whole
# daemon.json) changed; the builder image has no service manager. Then
# makes each heyvm image (IMAGE_DIR, shared read-only from the host) a
# base image in the engine, tagged TAG: once per image content, as the
# tag carries the rootfs digest.
set -euo pipefail
conf=$1
shift
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup
# overlay2 needs the overlay module; image imports use loop devices.
modprobe overlay 2>/dev/null || true
modprobe loop 2>/dev/null || true
mkdir -p /etc/docker /var/lib/heyvm-build/imported
restart=
if [ "$(cat /etc/docker/daemon.json 2>/dev/null)" != "$conf" ]; then
	printf '%s\n' "$conf" >/etc/docker/daemon.json.tmp
	mv /etc/docker/daemon.json.tmp /etc/docker/daemon.json
	restart=1
fi
pid=$(cat /run/heyvm-dockerd.pid 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ -z "$restart" ] && [ -S /run/docker.sock ]; then
	: # running, as configured
else
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid"
		for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
	fi
	setsid -f sh -c 'echo $$ >/run/heyvm-dockerd.pid; exec dockerd >/var/log/dockerd.log 2>&1 </dev/null'
	up=
	for _ in $(seq 300); do
		if docker info >/dev/null 2>&1; then up=1; break; fi
		sleep 0.2
	done
	if [ -z "$up" ]; then
		echo "the builder's Docker engine did not start; its log ends:" >&2
		tail -n 20 /var/log/dockerd.log >&2
		exit 1
	fi
fi

while [ $# -ge 2 ]; do
	dir=$1 tag=$2
	shift 2
	mark=/var/lib/heyvm-build/imported/${tag//[\/:]/_}
	# The mark, not a docker command, says it is there: `heyvm images
	# prune` is the way to empty the engine, and it removes the marks too.
	[ -e "$mark" ] && continue
	m=$(mktemp -d /var/tmp/heyvm-import.XXXXXX)
	mount -o loop,ro "$dir/rootfs.img" "$m"
	echo "HEYVM-STEP importing heyvm image ${dir##*/} into the builder's engine (once per image content)"
	rc=0
	tar -C "$m" --numeric-owner --xattrs --xattrs-include='*' --exclude=./lost+found -c . | docker import - "$tag" >/dev/null || rc=$?
	umount "$m"
	rmdir "$m"
	[ "$rc" = 0 ] || exit "$rc"
	touch "$mark"
done
