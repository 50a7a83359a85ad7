#!/usr/bin/env bash
# Install what heyvm needs on Debian 12 (once: heyvm itself then runs as
# an ordinary user). Idempotent. Run it as root, or as a user who may use
# sudo: it asks sudo for root itself.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "install-deps: installing packages needs root: run it as root (su -c $0), or install sudo" >&2
		exit 1
	fi
	exec sudo env "PATH=$PATH" "$0" "$@"
fi
export DEBIAN_FRONTEND=noninteractive
pkgs=(
	qemu-system-x86 qemu-system-arm qemu-utils   # the hypervisor (x86 and arm64 guests)
	passt                                        # the guest's network, with the host's loopback closed
	mmdebstrap e2fsprogs kmod dpkg cpio tar      # building the default image
	uidmap util-linux                            # user namespaces: no root needed after this script
	busybox-static openssh-client                # OpenSSH for `ssh-config` and the benchmark
	qemu-user-static binfmt-support arch-test    # building the arm64 image on x86
	git tmux ca-certificates              # git for `heyvm wt`; tmux drives the interactive test
	systemd                                      # systemd-analyze checks the autostart unit
	ruby bash-completion rsync                   # the suite checks the Homebrew formula, bash completion and rsync -e ssh into a sandbox
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Foreign-architecture image builds run the guest's binaries through
# qemu-user; containers often have the handler installed but off.
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && [ "$(uname -m)" != aarch64 ]; then
	[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
	update-binfmts --enable qemu-aarch64 2>/dev/null || true
fi
# The user who ran sudo needs subordinate ids for heyvm's user namespaces.
# Debian's useradd gives every new user a range; older accounts may lack one.
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
	for f in /etc/subuid /etc/subgid; do
		touch "$f"
		if ! grep -q "^$SUDO_USER:" "$f"; then
			start=$(awk -F: 'BEGIN { m = 100000 } { e = $2 + $3; if (e > m) m = e } END { print m }' "$f")
			echo "$SUDO_USER:$start:65536" >>"$f"
			echo "install-deps: gave $SUDO_USER subordinate ids $start-$((start + 65535)) in $f"
		fi
	done
fi
if ! command -v go >/dev/null 2>&1; then
	echo "install-deps: Go is not installed; heyvm needs Go 1.26 or newer (see go.mod)" >&2
	exit 1
fi
echo "install-deps: ok"
