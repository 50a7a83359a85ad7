#!/usr/bin/env bash
# heyvm's speed goals, each measured against a reference run side by side:
#   1. boot:  heyvm create -> first exec result  vs  bare qemu-system to the ready line
#   2. clone: heyvm's disk clone                 vs  cp --sparse=always
#   3. exec:  heyvm exec ID -- true              vs  OpenSSH's ssh -F <config> host true
# Optional: --build also times `heyvm images build-default --force`.
# Run as root on a machine where `heyvm images build-default` has run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/heyvm" ./cmd/heyvm
go build -o "$work/clonetime" ./bench/clonetime
heyvm="$work/heyvm"
export HEYO_HOME=${HEYO_HOME:-$HOME/.heyo}
export HEYVM_AUTO_WARM=0 # the boot row is a cold boot; bench/warm.sh measures warm ones
now() { date +%s.%N; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

if [ "${1:-}" = "--build" ]; then
	t0=$(now)
	"$heyvm" images build-default --force >/dev/null 2>&1
	t1=$(now)
	img="$HEYO_HOME/images/qemu/debian:12"
	echo "build-default: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s, $(du -sm "$img" | cut -f1) MiB on disk"
fi
img="$HEYO_HOME/images/qemu/debian:12"
[ -f "$img/image.yaml" ] || { echo "no default image: run heyvm images build-default" >&2; exit 1; }
cmdline=$(awk -F': ' '/^kernel_cmdline:/ { print $2 }' "$img/image.yaml")

# 1. Boot. Bare qemu: the same kernel, initrd and a fresh copy of the
# rootfs, same machine, devices and accelerator; time to the ready line.
bare=()
ours=()
for i in $(seq "$runs"); do
	cp --sparse=always "$img/rootfs.img" "$work/bare.img"
	: >"$work/console.log"
	t0=$(now)
	qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot \
		-object memory-backend-memfd,id=mem,size=1024M,share=on -machine q35,memory-backend=mem \
		-accel tcg,thread=multi -cpu max -smp 2 -m 1024M \
		-kernel "$img/vmlinuz" -initrd "$img/initrd" -append "$cmdline" \
		-drive file="$work/bare.img",if=none,id=disk0,format=raw,cache=writeback -device virtio-blk-pci,drive=disk0 \
		-netdev user,id=net0,hostfwd=tcp:127.0.0.1:0-:22 -device virtio-net-pci,netdev=net0,romfile= \
		-device virtio-rng-pci -chardev file,id=con0,path="$work/console.log" -device virtio-serial-pci -device virtconsole,chardev=con0 \
		</dev/null >/dev/null 2>&1 &
	qpid=$!
	# tail -f wakes on each write (inotify), so this is the moment the line lands.
	timeout 60 tail -f --pid=$qpid -n +1 "$work/console.log" | grep -m1 -q HEYVM-READY || true
	t1=$(now)
	kill $qpid 2>/dev/null; wait $qpid 2>/dev/null || true
	bare+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
	rm -f "$work/bare.img"

	t0=$(now)
	"$heyvm" create --cold --name "bench-$i" --memory 1024 --cpus 2 >/dev/null 2>&1
	"$heyvm" exec "bench-$i" -- true
	t1=$(now)
	ours+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
	[ "$i" = "$runs" ] || "$heyvm" rm --force --yes "bench-$i" >/dev/null
done
b=$(printf '%s\n' "${bare[@]}" | median)
o=$(printf '%s\n' "${ours[@]}" | median)
echo "boot:  heyvm create->exec $(printf %.2f "$o") s  bare qemu->ready $(printf %.2f "$b") s  ratio $(ratio "$o" "$b") (goal <= 1.3, and <= 8 s)"

# 2. Clone of the 4 GiB image rootfs.
read -r _ hc method < <("$work/clonetime" "$img/rootfs.img" "$work" | head -1)
cpt=$("$work/clonetime" "$img/rootfs.img" "$work" | awk '$1 == "cp" { print $2 }')
echo "clone: heyvm $hc s ($method)  cp --sparse=always $cpt s  ratio $(ratio "$hc" "$cpt") (goal <= 0.2 s)"

# 3. exec true against OpenSSH, on the sandbox left running above.
name="bench-$runs"
"$heyvm" ssh-config "$name" >"$work/ssh_config"
n=20
t0=$(now); for _ in $(seq $n); do "$heyvm" exec "$name" -- true; done; t1=$(now)
h=$(awk -v a="$t0" -v b="$t1" -v n=$n 'BEGIN { print (b - a) / n }')
t0=$(now); for _ in $(seq $n); do ssh -F "$work/ssh_config" "$name" true; done; t1=$(now)
s=$(awk -v a="$t0" -v b="$t1" -v n=$n 'BEGIN { print (b - a) / n }')
echo "exec:  heyvm exec true $(printf %.3f "$h") s  ssh true $(printf %.3f "$s") s  ratio $(ratio "$h" "$s") (goal <= 1.2)"
"$heyvm" rm --force --yes "$name" >/dev/null
