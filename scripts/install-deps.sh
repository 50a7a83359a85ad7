#!/usr/bin/env bash
# Install what heyvm needs on Debian 12 (run as root). Idempotent.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: run as root (sudo $0)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
pkgs=(
	qemu-system-x86 qemu-system-arm qemu-utils   # the hypervisor (x86 and arm64 guests)
	debootstrap e2fsprogs kmod dpkg cpio         # building the default image
	busybox-static openssh-client                # OpenSSH for `ssh-config` and the benchmark
	qemu-user-static binfmt-support              # building the arm64 image on x86
	git tmux ca-certificates              # git for `heyvm wt`; tmux drives the interactive test
	systemd                                      # systemd-analyze checks the autostart unit
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v go >/dev/null 2>&1; then
	echo "install-deps: Go is not installed; heyvm needs Go 1.26 or newer (see go.mod)" >&2
	exit 1
fi
echo "install-deps: ok"
