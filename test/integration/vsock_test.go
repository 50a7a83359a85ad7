package integration

import (
	"strings"
	"testing"
)

// vsockClient is a ProxyCommand for OpenSSH in the guest: a stream to
// vsock CID $1 port $2 on stdin and stdout.
const vsockClient = `use strict; use Socket qw(SOCK_STREAM);
socket(my $s, 40, SOCK_STREAM, 0) or die "socket: $!";
connect($s, pack("S S L L x4", 40, 0, $ARGV[1], $ARGV[0])) or die "connect: $!";
my $pid = fork();
if ($pid == 0) { while (sysread(STDIN, my $b, 65536)) { syswrite($s, $b) } shutdown($s, 1); exit 0 }
while (sysread($s, my $b, 65536)) { syswrite(STDOUT, $b) }
kill "TERM", $pid; exit 0;
`

// The guest side of SSH over virtio-vsock (how apple_virt reaches sshd,
// out of macOS's Local Network Privacy's way): heyvm's init listens on
// vsock port 22 and runs sshd per connection. Proven here under qemu with
// the kernel's vsock loopback (CID 1), from inside the guest: OpenSSH in
// the guest connects through it, with the guest's own host key.
func TestGuestVsockSSHListener(t *testing.T) {
	needVM(t)
	out, errOut, code := runIn(sharedEnv, vsockClient, "exec", shared, "--", "sh", "-c", `cat >/tmp/vsock-client.pl &&
busybox modprobe vsock_loopback &&
rm -f /tmp/vk /tmp/vk.pub && ssh-keygen -q -t ed25519 -N '' -f /tmp/vk &&
cat /tmp/vk.pub >>/root/.ssh/authorized_keys &&
echo "vsock-host $(cat /etc/ssh/ssh_host_ed25519_key.pub)" >/tmp/vk.known &&
ssh -i /tmp/vk -o IdentitiesOnly=yes -o UserKnownHostsFile=/tmp/vk.known -o StrictHostKeyChecking=yes \
    -o "ProxyCommand=perl /tmp/vsock-client.pl 1 22" root@vsock-host 'echo over-vsock; echo "from: $SSH_CONNECTION"'`)
	if code != 0 || !strings.HasPrefix(out, "over-vsock\n") {
		t.Fatalf("OpenSSH over vsock loopback in the guest: exit %d\n%s\n%s", code, out, errOut)
	}
	// Not an IP connection: sshd -i on the vsock stream.
	if from := strings.TrimSpace(strings.SplitN(out, "from:", 2)[1]); strings.Contains(from, ".") {
		t.Errorf("the session came over IP, not vsock: %q", from)
	}
}
