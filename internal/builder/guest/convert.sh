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
# The layers by their short names (overlay2/l/<id>, as Docker mounts them
# itself), relative to the overlay2 folder: mount options fit in a page,
# which holds about 140 of those and only about 40 full paths.
IFS=: read -ra dirs <<<"$layers"
short=()
for d in "${dirs[@]}"; do
	short+=("l/$(cat "${d%/diff}/link")")
done
overlay2=$(dirname "$(dirname "${dirs[0]}")")
(cd "$overlay2" && IFS=: && mount -t overlay overlay -o "lowerdir=${short[*]},upperdir=$work/upper,workdir=$work/work" "$R")

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
case $(basename "${init:-none}") in
none) layer=injected ;;
systemd) layer=systemd ;;
busybox) if [ -f "$R/etc/heyvm/rc.sysinit" ]; then layer=heyvm; else layer=inittab; fi ;;
*) layer=inittab ;;
esac
fact init "$layer"
added=()

install_file() { # SRC DEST-IN-ROOT MODE
	local d
	d=$(indir "$(dirname "$2")")
	mkdir -p "$d"
	rm -f "$d/$(basename "$2")"
	install -m "$3" "$1" "$d/$(basename "$2")"
}
# heyvm's part of the boot, for a root's own init to run: hostname,
# network (DHCP on the uplink, the host link), the SSH host key, shares.
install_setup() {
	install_file /etc/heyvm/rc.sysinit /etc/heyvm/rc.sysinit 0755
	install_file /etc/heyvm/udhcpc.script /etc/heyvm/udhcpc.script 0755
	install_file /etc/heyvm/vsock-sshd /etc/heyvm/vsock-sshd 0755
	added+=(/etc/heyvm/rc.sysinit /etc/heyvm/udhcpc.script /etc/heyvm/vsock-sshd)
}

if [ "$layer" = injected ]; then
	step "adding heyvm's init (busybox) to a root with none"
	[ -n "$(inroot /bin/busybox)" ] || install_file /bin/busybox /bin/busybox 0755
	for f in /etc/inittab:0644 /etc/heyvm/rc.sysinit:0755 /etc/heyvm/rc.shutdown:0755 /etc/heyvm/serial-login:0755 /etc/heyvm/udhcpc.script:0755 /etc/heyvm/vsock-sshd:0755; do
		install_file "${f%:*}" "${f%:*}" "${f#*:}"
	done
	mkdir -p "$(indir /sbin)"
	ln -sfn /bin/busybox "$(indir /sbin)/init"
	for a in poweroff reboot halt; do
		[ -n "$(inroot "/sbin/$a")" ] || ln -sfn /bin/busybox "$(indir /sbin)/$a"
	done
	[ -n "$(inroot /bin/login)" ] || ln -sfn /bin/busybox "$(indir /bin)/login"
	[ -n "$(inroot /etc/fstab)" ] || printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$(indir /etc)/fstab"
	added+=("heyvm's busybox init")
fi

# A root shell on the console, for a root's own init: agetty logs root in
# (util-linux, on every Debian and Ubuntu root), else busybox's getty.
console_login() {
	if [ -n "$(inroot /sbin/agetty)" ]; then
		echo "/sbin/agetty --autologin root --noclear hvc0 linux"
	else
		printf '#!/bin/sh\nexec /bin/login -f root\n' >"$(indir /etc/heyvm)/root-login"
		chmod 0755 "$(indir /etc/heyvm)/root-login"
		added+=(/etc/heyvm/root-login)
		echo "/bin/busybox getty -n -l /etc/heyvm/root-login 0 hvc0 linux"
	fi
}

sshd_unit=
if [ "$layer" = systemd ]; then
	step "adding heyvm's units to the systemd root"
	install_setup
	for u in ssh sshd; do
		for d in /lib/systemd/system /usr/lib/systemd/system /etc/systemd/system; do
			[ -z "$sshd_unit" ] && [ -n "$(inroot "$d/$u.service")" ] && sshd_unit=$u.service
		done
	done
	sysd=$(indir /etc/systemd/system)
	mkdir -p "$sysd/multi-user.target.wants"
	# Before sshd (its host key) and the console (whose shell says
	# HEYVM-READY once sshd is up); sshd is wanted, enabled or not.
	cat >"$sysd/heyvm-init.service" <<UNIT
# heyvm: the guest's hostname, network (DHCP on eth0, heyvm's host link),
# SSH host key and shared folders. Added by heyvm images build.
[Unit]
Description=heyvm guest setup
After=local-fs.target
Before=network.target ${sshd_unit:-ssh.service} heyvm-console.service
Wants=network.target ${sshd_unit}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/etc/heyvm/rc.sysinit --foreign

[Install]
WantedBy=multi-user.target
UNIT
	# Not serial-getty@hvc0: it waits for udev's device unit, and a root
	# without udev (systemd-sysv alone) never gets one.
	cat >"$sysd/heyvm-console.service" <<UNIT
# heyvm: a root shell on the console hvc0, which heyvm provisions the
# guest through. It replaces serial-getty@hvc0.service (masked), which
# waits for a device unit that a root without udev never gets. Added by
# heyvm images build.
[Unit]
Description=heyvm console shell on hvc0
After=systemd-user-sessions.service heyvm-init.service ${sshd_unit}

[Service]
ExecStart=-$(console_login)
Type=idle
Restart=always
RestartSec=0
UtmpIdentifier=hvc0
TTYPath=/dev/hvc0
TTYReset=yes
TTYVHangup=yes
KillMode=process
IgnoreSIGPIPE=no
SendSIGHUP=yes

[Install]
WantedBy=multi-user.target
UNIT
	ln -sfn ../heyvm-init.service "$sysd/multi-user.target.wants/heyvm-init.service"
	ln -sfn ../heyvm-console.service "$sysd/multi-user.target.wants/heyvm-console.service"
	ln -sfn /dev/null "$sysd/serial-getty@hvc0.service"
	added+=(heyvm-init.service heyvm-console.service "serial-getty@hvc0.service masked")
	fact hostlink yes
fi

if [ "$layer" = inittab ] && [ -f "$(indir /etc)/inittab" ]; then
	step "adding heyvm's setup and console to the root's inittab"
	install_setup
	tab=$(indir /etc)/inittab
	# sshd at boot: the root's own rc scripts if they start it, else a
	# line of heyvm's.
	sshd_by_rc=
	ls "$(indir /etc)"/runlevels/*/sshd "$(indir /etc)"/rc[2345].d/S*ssh >/dev/null 2>&1 && sshd_by_rc=1
	if [ "$(basename "$init")" = busybox ]; then
		# busybox init (Alpine): the first field is the terminal.
		printf '\n# heyvm: its setup after the system'"'"'s, and a root shell on hvc0.\n::sysinit:/etc/heyvm/rc.sysinit --foreign\n' >>"$tab"
		grep -qs '^hvc0:' "$tab" || echo 'hvc0::respawn:/bin/login -f root' >>"$tab"
		[ -n "$sshd_by_rc" ] || echo '::respawn:/usr/sbin/sshd -D' >>"$tab"
	else
		# sysvinit: id:runlevels:action:process.
		printf '\n# heyvm: its setup after the system'"'"'s, and a root shell on hvc0.\nhv::sysinit:/etc/heyvm/rc.sysinit --foreign\n' >>"$tab"
		grep -qs '^hvc0:' "$tab" || echo "hvc0:2345:respawn:$(console_login)" >>"$tab"
		[ -n "$sshd_by_rc" ] || echo 'sshd:2345:respawn:/usr/sbin/sshd -D' >>"$tab"
	fi
	added+=("/etc/inittab: heyvm's setup and a root shell on hvc0")
	[ -n "$sshd_by_rc" ] || added+=("/etc/inittab: sshd (the root's rc scripts do not start it)")
	fact hostlink yes
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
	else
		fact cold_why "its root lacks bash or perl, which a warm start's identity step runs; add them to its Dockerfile (Debian: RUN apt-get install -y bash perl-base) and build it again"
	fi
else
	# A foreign init keeps state a snapshot would share among sandboxes
	# (systemd's machine id and journal, its units' view of sshd).
	fact cold_why "it runs its own init ($layer), whose running state a ready snapshot would share among the sandboxes restored from it; its sandboxes boot cold"
	# The guest gets its resolver from heyvm's DHCP client.
	if [ -L "$(indir /etc)/resolv.conf" ]; then
		rm -f "$(indir /etc)/resolv.conf"
		: >"$(indir /etc)/resolv.conf"
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
	[ -n "$sshd_unit" ] ||
		missing+=("a systemd unit for sshd (ssh.service or sshd.service): install your distribution's openssh-server package")
	;;
inittab)
	[ -f "$(indir /etc)/inittab" ] ||
		missing+=("an /etc/inittab for your /sbin/init ($init), which heyvm adds its setup and console to; or use systemd (RUN apt-get install -y systemd-sysv) or no init at all")
	;;
esac
[ -n "$(inroot /bin/busybox)" ] || [ "$layer" = injected ] || install_file /bin/busybox /bin/busybox 0755
[ ${#added[@]} -eq 0 ] || fact added "$(IFS=';' && echo "${added[*]}")"
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
