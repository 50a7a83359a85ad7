#!/bin/busybox sh
# heyvm's image build, inside its build VM. This is PID 1 of an initramfs
# that holds the packages (downloaded and verified on the host, which
# also wrote this VM's kernel and heyvm's initramfs), heyvm's edits to the
# root and the list of what to do. It installs the packages into a fresh
# root as mmdebstrap does (the essential ones unpacked, then installed by
# dpkg; then the rest), applies heyvm's edits, adds the kernel's modules,
# and writes the root as ext4 onto the VM's disk, /dev/vda, which is the
# new image's rootfs.img. It reports on the console:
#
#   HEYVM-BUILD-STEP <n> <total> <what>
#   HEYVM-BUILD-DONE <bytes used by the root>
#   HEYVM-BUILD-FAILED <why>
#
# and then powers the VM off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /work
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
console_up() {
	if (: </dev/console) 2>/dev/null; then exec </dev/console >/dev/console 2>&1; fi
}
console_up
fail() {
	echo "HEYVM-BUILD-FAILED $*"
	sync
	poweroff -f
}
while read -r m; do
	insmod "/lib/modules/$m" || echo "heyvm-build: insmod $m failed"
done </etc/modules.order
console_up

# KVER (the kernel), TRIPLET (its library folder, x86_64-linux-gnu),
# MERGED (the merged-/usr links: bin sbin lib ...), SIZE_KB, TOTAL_STEPS.
. /build/params
n=0
step() {
	n=$((n + 1))
	echo "HEYVM-BUILD-STEP $n $TOTAL_STEPS $*"
}

i=0
while [ ! -b /dev/vda ]; do
	i=$((i + 1))
	[ "$i" -gt 2000 ] && fail "the disk /dev/vda did not appear"
	usleep 5000
done

# Everything lives in memory until the end: the root and its ext4 image.
mount -t tmpfs -o size=90%,mode=0755 tmpfs /work || fail "no memory for the build (tmpfs)"
R=/work/root
mkdir -p "$R"
for d in $MERGED; do
	mkdir -p "$R/usr/$d"
	ln -s "usr/$d" "$R/$d"
done

step "unpacking the essential packages"
while read -r deb; do
	dpkg-deb -x "/build/debs/$deb" "$R" || fail "cannot unpack $deb"
done </build/essential.list

# dpkg's database, empty, and the packages where the root's dpkg finds them.
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/cache/heyvm-debs"
: >"$R/var/lib/dpkg/status"
: >"$R/var/lib/dpkg/available"
mount --bind /build/debs "$R/var/cache/heyvm-debs"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount --bind /dev "$R/dev"
# No service starts while packages are installed.
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 0755 "$R/usr/sbin/policy-rc.d"
export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true LC_ALL=C.UTF-8 LANGUAGE=C.UTF-8 LANG=C.UTF-8
inroot() {
	chroot "$R" /usr/bin/env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
debs() {
	sed 's|^|/var/cache/heyvm-debs/|' "$1"
}

step "installing the essential packages"
# shellcheck disable=SC2046
inroot dpkg --install --force-depends $(debs /build/essential.list) >/tmp/dpkg.log 2>&1 || {
	tail -n 5 /tmp/dpkg.log
	fail "dpkg could not install the essential packages: $(tail -n 1 /tmp/dpkg.log)"
}

step "installing the other packages"
# Unpacked in dependency order, then configured as dpkg sees fit.
# shellcheck disable=SC2046
inroot dpkg --unpack --force-depends $(debs /build/rest.list) >/tmp/dpkg.log 2>&1 || {
	tail -n 5 /tmp/dpkg.log
	fail "dpkg could not unpack the packages: $(tail -n 1 /tmp/dpkg.log)"
}
inroot dpkg --configure --pending --force-configure-any >/tmp/dpkg.log 2>&1 || {
	tail -n 5 /tmp/dpkg.log
	fail "dpkg could not configure the packages: $(tail -n 1 /tmp/dpkg.log)"
}
# What apt would have left: its sources and which packages came in as
# dependencies.
cp /build/sources.list "$R/etc/apt/sources.list"
cp /build/extended_states "$R/var/lib/apt/extended_states"
rm -f "$R/usr/sbin/policy-rc.d"

step "configuring the guest"
R=$R sh /build/edits.sh || fail "heyvm's edits to the root failed"

step "installing the kernel's modules ($KVER)"
mkdir -p /work/kernel /work/tools
dpkg-deb -x /build/kernel.deb /work/kernel || fail "cannot unpack the kernel package"
mkdir -p "$R/lib/modules"
mv "/work/kernel/lib/modules/$KVER" "$R/lib/modules/" || fail "the kernel package has no modules for $KVER"
rm -rf /work/kernel
# depmod is kmod's, which the default image does not hold: unpacked apart,
# and run with the root's C library (a root that holds kmod, the builder
# image's, has its own).
while read -r deb; do
	dpkg-deb -x "/build/debs/$deb" /work/tools || fail "cannot unpack $deb"
done </build/tools.list
# The loader itself, not /lib64's link to it (an absolute link, which
# leads nowhere from outside the root).
loader=$(ls "$R"/usr/lib/"$TRIPLET"/ld-linux*.so.* 2>/dev/null | head -n 1)
[ -n "$loader" ] || fail "the root has no dynamic loader"
libs=/work/tools/lib/$TRIPLET:/work/tools/usr/lib/$TRIPLET:$R/lib/$TRIPLET:$R/usr/lib/$TRIPLET
kmod=
for k in /work/tools/bin/kmod /work/tools/usr/bin/kmod "$R/bin/kmod" "$R/usr/bin/kmod"; do
	[ -x "$k" ] && kmod=$k && break
done
[ -n "$kmod" ] || fail "no kmod for depmod, in the root or beside it"
"$loader" --library-path "$libs" --argv0 depmod "$kmod" -b "$R" "$KVER" || fail "depmod failed"

# What apt leaves besides its records (it made the packages' partial
# folders its own and left its locks), and no more: the install's run
# state, caches and logs go, as mmdebstrap's cleanup takes them.
inroot sh -c 'for d in /var/cache/apt/archives /var/lib/apt/lists; do mkdir -p $d/partial && chown _apt:root $d/partial && chmod 700 $d/partial && : >$d/lock && chmod 640 $d/lock; done' ||
	fail "cannot set apt's folders"
echo "$ARCH" >"$R/var/lib/dpkg/arch"
umount "$R/var/cache/heyvm-debs" "$R/proc" "$R/sys" "$R/dev"
rmdir "$R/var/cache/heyvm-debs"
rm -rf /work/tools "$R"/run/* "$R/var/cache/ldconfig/aux-cache" "$R/var/lib/dpkg/available" "$R/var/lib/dpkg/available-old" \
	"$R/var/lib/dpkg/status-old" "$R/var/log/dpkg.log" "$R/var/log/alternatives.log"

step "writing the ext4 root file system"
used=$(du -sk "$R" | cut -f1)
# The root's own mke2fs, with its own configuration, run with the root's
# C library: into a file (holes where nothing is written, as on the
# host), then onto the disk without its holes.
MKE2FS_CONFIG=$R/etc/mke2fs.conf "$loader" --library-path "$R/lib/$TRIPLET:$R/usr/lib/$TRIPLET" --argv0 mkfs.ext4 "$R/sbin/mke2fs" \
	-t ext4 -q -F -L heyvm-root -m 0 -E root_owner=0:0 -d "$R" /work/rootfs.img "${SIZE_KB}k" || fail "mkfs.ext4 failed"
"$loader" --library-path "$R/lib/$TRIPLET:$R/usr/lib/$TRIPLET" --argv0 dd "$R/bin/dd" if=/work/rootfs.img of=/dev/vda bs=1M conv=sparse,fsync 2>/tmp/dd.log ||
	fail "cannot write the disk: $(tail -n 1 /tmp/dd.log)"
sync
echo "HEYVM-BUILD-DONE $((used * 1024))"
poweroff -f
