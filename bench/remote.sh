#!/usr/bin/env bash
# A context on a second host, side by side in one run. The host is a
# network namespace of this machine with its own address on a veth pair
# and an OpenSSH sshd on it, running as its own user with its own heyvm
# (installed by `context create --install`); the laptop is another user.
#   1. `heyvm --context box exec ID -- true` against `ssh host heyvm exec
#      ID -- true` typed by hand (a new connection each time), and against
#      the same over a shared OpenSSH connection (ControlMaster):
#      goal <= 1.1x the by-hand ssh
#   2. `heyvm wt BRANCH --deploy` of a worktree with 10,000 new files into
#      the running sandbox, against `rsync -a` of the same tree to the
#      host over the same sshd: goal <= 1.5x
# Run as root (it makes the namespace and the two users) where the
# integration tests' image cache is (HEYVM_TEST_IMAGE_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-10}
cache=${HEYVM_TEST_IMAGE_CACHE:-/var/tmp/heyvm-test-cache}
ns=heyvm-bench-rh addr=10.231.8.2 port=2222
ruser=heyvm-bench-r luser=heyvm-bench-l
work=$(mktemp -d /tmp/heyvm-bench-remote-XXXXXX)
chmod 755 "$work"
sshd_pid=
L() { runuser -u "$luser" -- env HOME="/home/$luser" HEYO_HOME="/home/$luser/.heyo" PATH=/usr/bin:/bin "$work/heyvm" "$@"; }
cleanup() {
	L --context box rm --force --yes proj-big >/dev/null 2>&1 || true
	# The shared connections end before the namespace goes (sshd's
	# session processes would wait on a dead link).
	for cp in "/home/$luser/.heyo/run/ssh/cm-%C" "/home/$luser/.cm/%C"; do
		runuser -u "$luser" -- ssh -O exit -o "ControlPath=$cp" -p "$port" "$ruser@$addr" 2>/dev/null || true
	done
	[ -f "/home/$ruser/sshd/sshd.pid" ] && kill "$(cat "/home/$ruser/sshd/sshd.pid")" 2>/dev/null
	[ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null
	ip netns del "$ns" 2>/dev/null || true
	ip link del hvbr0 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/heyvm" ./cmd/heyvm
chmod 755 "$work/heyvm"
sshd=$(HEYVM_TEST_SSHD_DIR=/var/tmp/heyvm-test-sshd scripts/test-sshd.sh)

ip netns del "$ns" 2>/dev/null || true
ip link del hvbr0 2>/dev/null || true
ip netns add "$ns"
ip link add hvbr0 type veth peer name hvbr1
ip link set hvbr1 netns "$ns"
ip addr add 10.231.8.1/24 dev hvbr0 && ip link set hvbr0 up
ip -n "$ns" addr add "$addr/24" dev hvbr1 && ip -n "$ns" link set hvbr1 up && ip -n "$ns" link set lo up
ip -n "$ns" route add default via 10.231.8.1
for u in "$ruser" "$luser"; do id "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$u"; done
usermod -aG tty "$ruser" # its sshd gives a session's pty to group tty
R=/home/$ruser LH=/home/$luser
rm -rf "$R/.heyo" "$R/.local" "$R/sshd" "$R/.ssh" "$R/rsync-target" "$LH/.heyo" "$LH/.ssh" "$LH/proj"*
mkdir -p "$R/.heyo/images/qemu/debian:12" "$R/sshd" "$R/.ssh" "$LH/.ssh"
cp --sparse=always "$cache/images/qemu/debian:12/"{vmlinuz,initrd,rootfs.img,image.yaml} "$R/.heyo/images/qemu/debian:12/"
ssh-keygen -q -t ed25519 -N "" -f "$R/sshd/host_ed25519"
cat >"$R/sshd/sshd_config" <<CFG
ListenAddress $addr:$port
HostKey $R/sshd/host_ed25519
PidFile $R/sshd/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
MaxSessions 64
MaxStartups 64
SetEnv HEYVM_AUTO_WARM=0
CFG
ssh-keygen -q -t ed25519 -N "" -f "$LH/.ssh/id_ed25519"
echo "[$addr]:$port $(cut -d' ' -f1,2 "$R/sshd/host_ed25519.pub")" >"$LH/.ssh/known_hosts"
cp "$LH/.ssh/id_ed25519.pub" "$R/.ssh/authorized_keys"
chown -R "$ruser:" "$R" && chown -R "$luser:" "$LH"
ip netns exec "$ns" runuser -u "$ruser" -- "$sshd" -D -e -f "$R/sshd/sshd_config" >"$work/sshd.log" 2>&1 &
sshd_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null && break; sleep 0.2; done

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
SSH() { runuser -u "$luser" -- ssh -o BatchMode=yes -p "$port" "$@"; }

L context create box --host "ssh://$ruser@$addr:$port" --install >/dev/null
mkdir -p "$LH/proj" && chown "$luser:" "$LH/proj"
runuser -u "$luser" -- sh -c "cd $LH/proj && git init -q -b main && git config user.email b@x && git config user.name b && echo one >a && git add a && git commit -qm first"
(cd "$LH/proj" && L --context box wt big --deploy --memory 1024 >/dev/null)
id=$(L --context box get proj-big --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
rbin="/home/$ruser/.local/bin/heyvm"

# 1. exec true
heyvm_t=() hand_t=() shared_t=()
runuser -u "$luser" -- mkdir -p -m 700 "$LH/.cm"
cm=(-o ControlMaster=auto -o "ControlPath=$LH/.cm/%C" -o ControlPersist=60)
SSH "${cm[@]}" "$ruser@$addr" true
L --context box exec "$id" -- true
for _ in $(seq "$runs"); do
	t=$(now); L --context box exec "$id" -- true; heyvm_t+=("$(since "$t")")
	t=$(now); SSH "$ruser@$addr" "$rbin" exec "$id" -- true; hand_t+=("$(since "$t")")
	t=$(now); SSH "${cm[@]}" "$ruser@$addr" "$rbin" exec "$id" -- true; shared_t+=("$(since "$t")")
done
h=$(printf '%s\n' "${heyvm_t[@]}" | median); b=$(printf '%s\n' "${hand_t[@]}" | median); s=$(printf '%s\n' "${shared_t[@]}" | median)
echo "exec true through the context: heyvm ${h}s; ssh host heyvm exec by hand ${b}s (ratio $(ratio "$h" "$b"), goal <= 1.1); the same over a shared OpenSSH connection ${s}s (ratio $(ratio "$h" "$s"))"

# 2. 10,000 files
runuser -u "$luser" -- sh -c "cd $LH/proj.worktrees/big && for d in \$(seq 100); do mkdir -p src/d\$d; for f in \$(seq 100); do echo \"file \$d \$f\" > src/d\$d/f\$f.txt; done; done && git add -A && git commit -qm tenk"
du -sh --apparent-size "$LH/proj.worktrees/big/src" | cut -f1 | sed 's/^/tree: 10000 files, /'
t=$(now); (cd "$LH/proj" && L --context box wt big --deploy >/dev/null); dep=$(since "$t")
t=$(now); runuser -u "$luser" -- rsync -a -e "ssh -o BatchMode=yes -p $port" "$LH/proj.worktrees/big/" "$ruser@$addr:rsync-target/"; rs=$(since "$t")
L --context box ssh-config proj-big >"$LH/ssh_config"
chown "$luser:" "$LH/ssh_config"
t=$(now); runuser -u "$luser" -- rsync -a -e "ssh -F $LH/ssh_config" "$LH/proj.worktrees/big/" "proj-big:/root/rsync-target/"; rsg=$(since "$t")
n=$(L --context box exec "$id" -- sh -c 'find /workspace/src -type f | wc -l')
echo "deploy of 10,000 new files (committed; $n arrived): ${dep}s"
echo "  rsync -a of the same tree to the host: ${rs}s; ratio $(ratio "$dep" "$rs") (goal <= 1.5)"
echo "  rsync -a of the same tree into the sandbox (ssh-config, through the host): ${rsg}s; ratio $(ratio "$dep" "$rsg")"
