#!/usr/bin/env bash
# Prints the path of an OpenSSH sshd for the KubeVirt protocol tests
# (internal/kubevirt: SSH over the portforward client), without installing
# or starting anything: /usr/sbin/sshd if there is one, else Debian's
# openssh-server and libwrap0 unpacked into a cache directory with a
# wrapper that finds the library. (Installing openssh-server as root would
# start the system's sshd on every address.)
#
#   HEYVM_TEST_SSHD=$(scripts/test-sshd.sh) go test ./internal/kubevirt/
#
# HEYVM_TEST_SSHD_DIR picks the cache directory (the remote-host tests use
# one that another user can run from).
set -euo pipefail
if [[ -x /usr/sbin/sshd ]]; then
	echo /usr/sbin/sshd
	exit 0
fi
dir=${HEYVM_TEST_SSHD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/heyvm-test-sshd}
if [[ ! -x $dir/sshd ]]; then
	rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/debs"
	(cd "$dir.tmp/debs" && apt-get download openssh-server libwrap0 >/dev/null 2>&1) || {
		echo "test-sshd: apt-get download openssh-server libwrap0 failed (run apt-get update?)" >&2
		exit 1
	}
	for deb in "$dir.tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$dir.tmp/root"; done
	libdir=$(dirname "$(find "$dir.tmp/root" -name 'libwrap.so.0' | head -n1)")
	libdir=${libdir/#$dir.tmp/$dir}
	cat >"$dir.tmp/sshd" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH=$libdir exec $dir/root/usr/sbin/sshd "\$@"
WRAP
	chmod +x "$dir.tmp/sshd"
	rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$dir/sshd"
