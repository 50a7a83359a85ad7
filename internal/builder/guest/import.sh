#!/bin/bash
# heyvm builder: make a heyvm image ($1: its folder, shared read-only
# from the host) a base image in Docker's engine, tagged $2. Once per
# image content: the tag carries the rootfs digest.
set -euo pipefail
dir=$1 tag=$2
docker image inspect "$tag" >/dev/null 2>&1 && exit 0
m=$(mktemp -d /var/tmp/heyvm-import.XXXXXX)
trap 'umount "$m" 2>/dev/null; rmdir "$m"' EXIT
mount -o loop,ro "$dir/rootfs.img" "$m"
echo "importing heyvm image $dir as $tag"
tar -C "$m" --numeric-owner --xattrs --xattrs-include='*' --exclude=./lost+found -c . | docker import - "$tag" >/dev/null
