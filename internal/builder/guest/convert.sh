#!/bin/bash
# heyvm builder: turn a built Docker image into a bootable heyvm root file
# system. Runs as root in the builder VM, so owners, modes, setuid bits and
# xattrs survive with no root on the host.
#
#   convert.sh TAG OUT SIZE_MB DEFAULT_IMAGE_DIR DEFAULT_KVER MODULE...
#
# TAG is the built image; OUT a folder shared with the host, which gets
# rootfs.img (sparse ext4), facts (key=value lines) and, when the root
# brings its own kernel, vmlinuz plus kroot/ (busybox and the modules the
# host puts in the initramfs). Otherwise the default image's modules
# (DEFAULT_IMAGE_DIR, kernel DEFAULT_KVER) are put into the root. MODULE...
# are the modules heyvm's initramfs loads.
# Exit 3 with HEYVM-MISSING lines: the root cannot boot under heyvm.
set -euo pipefail
tag=$1 out=$2 size_mb=$3 def_dir=$4 def_kver=$5
shift 5
initramfs_modules=("$@")

work=$(mktemp -d /var/tmp/heyvm-convert.XXXXXX)
R=$work/root
cleanup() {
	umount "$R" 2>/dev/null || true
	umount "$work/def" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/upper" "$work/work" "$R" "$out"
facts=$out/facts
: >"$facts"
fact() { echo "$1=$2" >>"$facts"; }
step() { echo "HEYVM-STEP $*"; }

# The image's layers, mounted as they are on the engine's disk, with a
# scratch layer on top for heyvm's changes: no export, no copy.
driver=$(docker image inspect --format '{{.GraphDriver.Name}}' "$tag")
[ "$driver" = overlay2 ] || { echo "the builder's engine uses the $driver storage driver, not overlay2: run \`heyvm images prune\` and build again" >&2; exit 1; }
layers=$(docker image inspect --format '{{.GraphDriver.Data.UpperDir}}:{{.GraphDriver.Data.LowerDir}}' "$tag")
layers=${layers%:<no value>}
mount -t overlay overlay -o "lowerdir=$layers,upperdir=$work/upper,workdir=$work/work" "$R"

# inroot PATH: the path PATH resolves to inside the root (symlinks are
# followed as the guest will see them), printed only if it exists.
inroot() {
	local p=$1 t
	for _ in 1 2 3 4 5 6 7 8 9 10 11 12; do
		if [ -L "$R$p" ]; then
			t=$(readlink "$R$p")
			case $t in /*) p=$t ;; *) p=$(dirname "$p")/$t ;; esac
		else
			[ -e "$R$p" ] && echo "$p"
			return 0
		fi
	done
}
# indir DIR: DIR's path inside the root with a top-level symlink (merged
# /usr: /lib -> usr/lib) resolved, so nothing is written outside it.
indir() {
	local top=${1#/} rest=
	case $top in */*) rest=/${top#*/} top=${top%%/*} ;; esac
	if [ -L "$R/$top" ]; then
		top=$(readlink "$R/$top")
		top=${top#/}
	fi
	echo "$R/$top$rest"
}

step "checking what the root needs to boot"
init=$(inroot /sbin/init)
if [ -z "$init" ]; then
	layer=injected
elif [ -f "$R/etc/heyvm/rc.sysinit" ]; then
	layer=heyvm
elif [ "$(basename "$init")" = systemd ]; then
	layer=systemd
else
	layer=inittab
fi
fact init "$layer"

install_file() { # SRC DEST-IN-ROOT MODE
	local d
	d=$(indir "$(dirname "$2")")
	mkdir -p "$d"
	rm -f "$d/$(basename "$2")"
	install -m "$3" "$1" "$d/$(basename "$2")"
}

if [ "$layer" = injected ]; then
	step "adding heyvm's init (busybox) to a root with none"
	[ -n "$(inroot /bin/busybox)" ] || install_file /bin/busybox /bin/busybox 0755
	for f in /etc/inittab:0644 /etc/heyvm/rc.sysinit:0755 /etc/heyvm/rc.shutdown:0755 /etc/heyvm/serial-login:0755 /etc/heyvm/udhcpc.script:0755; do
		install_file "${f%:*}" "${f%:*}" "${f#*:}"
	done
	mkdir -p "$(indir /sbin)"
	ln -sfn /bin/busybox "$(indir /sbin)/init"
	for a in poweroff reboot halt; do
		[ -n "$(inroot "/sbin/$a")" ] || ln -sfn /bin/busybox "$(indir /sbin)/$a"
	done
	[ -n "$(inroot /bin/login)" ] || ln -sfn /bin/busybox "$(indir /bin)/login"
	[ -n "$(inroot /etc/fstab)" ] || printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$(indir /etc)/fstab"
fi
if [ "$layer" = injected ] || [ "$layer" = heyvm ]; then
	fact hostlink yes
	printf 'heyvm\n' >"$(indir /etc)/hostname"
	# The guest gets its resolver from heyvm (DHCP or the command line).
	rm -f "$(indir /etc)/resolv.conf"
	: >"$(indir /etc)/resolv.conf"
	# A warm start gives a restored VM its identity with bash and perl.
	rootsh=$(awk -F: '$1 == "root" {print $7}' "$(indir /etc)/passwd" 2>/dev/null || true)
	if [ "$(basename "${rootsh:-sh}")" = bash ] && [ -n "$(inroot /usr/bin/perl)" ]; then
		fact warm yes
	fi
fi
# Every guest: heyvm's sshd settings, its readiness line on the console,
# no host keys baked in (each sandbox makes its own), no password on root,
# an empty machine-id (made per sandbox).
if [ -d "$(indir /etc)/ssh" ]; then
	install_file /etc/ssh/sshd_config.d/heyvm.conf /etc/ssh/sshd_config.d/heyvm.conf 0644
	rm -f "$(indir /etc)"/ssh/ssh_host_*
fi
install_file /etc/profile.d/heyvm-ready.sh /etc/profile.d/heyvm-ready.sh 0644
if [ -f "$(indir /etc)/shadow" ]; then
	awk -F: 'BEGIN {OFS=":"} $1 == "root" && $2 == "" {$2 = "*"} {print}' "$(indir /etc)/shadow" >"$work/shadow"
	cat "$work/shadow" >"$(indir /etc)/shadow"
fi
[ -e "$(indir /etc)/machine-id" ] && : >"$(indir /etc)/machine-id"
rm -f "$R/.dockerenv"
mkdir -p "$R/proc" "$R/sys" "$R/dev" "$R/run" "$R/tmp" "$R/root"
chmod 1777 "$R/tmp"
touch "$R/root/.hushlogin"

# The kernel: the root's own (Debian's linux-image-*, Alpine's
# linux-lts), or the default image's.
kfile= kver=
for k in "$R"/boot/vmlinuz*; do
	[ -f "$k" ] || continue
	kfile=$k
done
if [ -n "$kfile" ]; then
	moddir=$(indir /lib/modules)
	v=${kfile##*/vmlinuz-}
	if [ -d "$moddir/$v" ]; then
		kver=$v
	elif [ "$(ls "$moddir" 2>/dev/null | wc -l)" = 1 ]; then
		kver=$(ls "$moddir")
	fi
fi
if [ -n "$kver" ]; then
	step "using the root's own kernel $kver"
	fact kernel own
	fact kver "$kver"
	depmod -b "$R" "$kver"
	cp "$kfile" "$out/vmlinuz"
	K=$out/kroot/lib/modules/$kver
	rm -rf "$out/kroot"
	mkdir -p "$K" "$out/kroot/bin"
	cp /bin/busybox "$out/kroot/bin/busybox"
	# The initramfs's modules and their dependencies, decompressed (the
	# initramfs loads them with busybox's insmod).
	for m in "${initramfs_modules[@]}"; do
		modprobe -d "$R" -S "$kver" --show-depends "$m" 2>/dev/null || true
	done | awk '$1 == "insmod" {print $2}' | sort -u | while read -r f; do
		rel=${f#*/lib/modules/"$kver"/}
		mkdir -p "$K/$(dirname "$rel")"
		case $f in
		*.gz) gzip -dc "$f" >"$K/${rel%.gz}" ;;
		*.xz) xz -dc "$f" >"$K/${rel%.xz}" ;;
		*.zst) zstd -qdc "$f" >"$K/${rel%.zst}" ;;
		*) cp "$f" "$K/$rel" ;;
		esac
	done
	sed -E 's/\.ko\.(gz|xz|zst)/.ko/g' "$moddir/$kver/modules.dep" >"$K/modules.dep"
	cp "$moddir/$kver/modules.builtin" "$K/modules.builtin" 2>/dev/null || : >"$K/modules.builtin"
	# The kernel lives outside the disk (the hypervisor loads it).
	rm -f "$kfile"
else
	fact kernel default
	fact kver "$def_kver"
	moddir=$(indir /lib/modules)
	if [ ! -d "$moddir/$def_kver" ]; then
		step "adding the default image's kernel modules ($def_kver)"
		mkdir -p "$work/def" "$moddir"
		mount -o loop,ro "$def_dir/rootfs.img" "$work/def"
		cp -a "$work/def/lib/modules/$def_kver" "$moddir/"
		umount "$work/def"
	fi
fi

missing=()
[ -n "$(inroot /usr/sbin/sshd)" ] || missing+=("an SSH server (/usr/sbin/sshd): on Debian or Ubuntu add  RUN apt-get update && apt-get install -y openssh-server ; on Alpine  RUN apk add openssh-server")
case $layer in
systemd)
	ls "$(indir /etc)"/systemd/system/*.wants/ssh*.service >/dev/null 2>&1 ||
		missing+=("sshd started at boot: add  RUN systemctl enable ssh")
	grep -rqs -e '--autologin root' "$(indir /etc)/systemd/system/serial-getty@hvc0.service.d/" ||
		missing+=("a root shell on the console hvc0: add  RUN mkdir -p /etc/systemd/system/serial-getty@hvc0.service.d && printf '[Service]\\nExecStart=\\nExecStart=-/sbin/agetty --autologin root --noclear %%I linux\\n' >/etc/systemd/system/serial-getty@hvc0.service.d/autologin.conf")
	;;
inittab)
	grep -qs '^hvc0:' "$(indir /etc)/inittab" ||
		missing+=("a root shell on the console hvc0 (your /sbin/init is $init): add  RUN echo 'hvc0::respawn:/bin/login -f root' >>/etc/inittab")
	ls "$(indir /etc)"/runlevels/*/sshd "$(indir /etc)"/rc[2345].d/S*ssh >/dev/null 2>&1 || grep -qs sshd "$(indir /etc)/inittab" ||
		missing+=("sshd started at boot: on Alpine add  RUN rc-update add sshd default")
	;;
esac
[ -n "$(inroot /bin/busybox)" ] || [ "$layer" = injected ] || install_file /bin/busybox /bin/busybox 0755
if [ ${#missing[@]} -gt 0 ]; then
	for m in "${missing[@]}"; do echo "HEYVM-MISSING $m"; done
	exit 3
fi

step "writing the ext4 root file system (${size_mb} MiB)"
used=$(du -sxm "$R" | cut -f1)
if [ $((used + used / 10 + 64)) -gt "$size_mb" ]; then
	echo "HEYVM-TOO-SMALL $used"
	exit 4
fi
fact used_mb "$used"
mkfs.ext4 -q -F -L heyvm-root -m 0 -E root_owner=0:0 -d "$R" "$work/rootfs.img" "${size_mb}M"
cp --sparse=always "$work/rootfs.img" "$out/rootfs.img.tmp"
mv "$out/rootfs.img.tmp" "$out/rootfs.img"
echo done >>"$facts"
