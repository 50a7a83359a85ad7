package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heyvm/heyvm/internal/portfwd/httpburst"
)

// refusedQuickly checks that a connection to the port is closed at once
// (no service behind it), not left hanging.
func refusedQuickly(t *testing.T, port int) {
	t.Helper()
	start := time.Now()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
		n, _ := c.Read(make([]byte, 1))
		c.Close()
		if n > 0 {
			t.Fatalf("port %d answered with nothing listening in the guest", port)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a connection with nothing listening took %s to close", d)
	}
}

const startHTTPD = "mkdir -p /srv && echo served > /srv/index.html && (busybox httpd -p 8080 -h /srv &)"

// hostOnlyServer serves a secret on the host's 127.0.0.1 only.
func hostOnlyServer(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "host-loopback-secret") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// guestReachesHost lists which of the guest's ways to the host (QEMU's
// 10.0.2.2, the default gateway, the guest's own uplink address, which
// passt copies from the host) reach a server on the host's 127.0.0.1.
func guestReachesHost(t *testing.T, env []string, name string, port int) string {
	t.Helper()
	script := fmt.Sprintf(`gw=$(busybox ip route | awk '/^default/ {print $3}')
self=$(busybox ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
for a in $(printf "%%s\\n" 10.0.2.2 $gw $self | sort -u); do
  if timeout 5 bash -c 'exec 3<>/dev/tcp/'$a'/%d && printf "GET / HTTP/1.0\r\n\r\n" >&3 && cat <&3' 2>/dev/null | grep -q host-loopback-secret; then echo "reached via $a"; fi
done; true`, port)
	return strings.TrimSpace(must(t, env, "exec", name, "--", "bash", "-c", script))
}

func TestPortForwards(t *testing.T) {
	env := testHome(t)
	h1, h2, h3 := freePort(t), freePort(t), freePort(t)
	must(t, env, "create", "--name", "pf", "--memory", "512", "--port", fmt.Sprintf("%d:8080", h1))

	// By default the guest reaches the world (here: its nameserver) but
	// not the host's loopback.
	if got := guestReachesHost(t, env, "pf", hostOnlyServer(t)); got != "" {
		t.Errorf("a guest without --host-loopback reached a host-only service: %s", got)
	}
	if out := must(t, env, "exec", "pf", "--", "getent", "hosts", "deb.debian.org"); strings.TrimSpace(out) == "" {
		t.Error("the guest cannot resolve names")
	}
	must(t, env, "exec", "pf", "--", "sh", "-c", startHTTPD)
	if got := httpGet(t, h1); !strings.Contains(got, "served") {
		t.Fatalf("forward: %q", got)
	}
	// A burst against busybox httpd (listen backlog 9): none fails.
	failed, took := httpburst.Run(h1, 500, 50)
	t.Logf("500 requests, 50 at a time: %d failed, %s", failed, took.Round(time.Millisecond))
	if failed != 0 {
		t.Errorf("%d of 500 requests failed", failed)
	}
	// 100 MB arrive byte-identical.
	want := strings.Fields(must(t, env, "exec", "pf", "--", "sh", "-c", "head -c 100000000 /dev/urandom > /srv/big && sha256sum /srv/big"))[0]
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/big", h1))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, _ := io.Copy(h, resp.Body)
	resp.Body.Close()
	if got := hex.EncodeToString(h.Sum(nil)); got != want || n != 100000000 {
		t.Errorf("100 MB download: %d bytes, sha256 %s, want %s", n, got, want)
	}
	must(t, env, "exec", "pf", "--", "rm", "/srv/big")

	// The guest service restarts: refused at once while down, served after.
	must(t, env, "exec", "pf", "--", "sh", "-c", "kill $(cat /proc/[0-9]*/stat 2>/dev/null | awk '$2 == \"(busybox)\" {print $1}') 2>/dev/null; sleep 0.5; true")
	refusedQuickly(t, h1)
	must(t, env, "exec", "pf", "--", "sh", "-c", startHTTPD)
	if got := httpGet(t, h1); !strings.Contains(got, "served") {
		t.Fatalf("after the restart: %q", got)
	}

	// The owner's sshd child dies: the host port stays, the next request works.
	must(t, env, "exec", "pf", "--", "sh", "-c", `main=$(cat /run/sshd.pid); p=$$; anc=" "
while [ -n "$p" ] && [ "$p" != 1 ] && [ "$p" != 0 ]; do anc="$anc$p "; p=$(awk '{print $4}' /proc/$p/stat); done
for d in /proc/[0-9]*; do q=${d#/proc/}; [ "$(cat $d/comm 2>/dev/null)" = sshd ] || continue; [ "$q" = "$main" ] && continue
case "$anc" in *" $q "*) continue;; esac; kill $q; done; true`)
	if got := httpGet(t, h1); !strings.Contains(got, "served") {
		t.Fatalf("after killing the owner's sshd child: %q", got)
	}

	// port add / rm / list on the running sandbox.
	must(t, env, "port", "add", "pf", fmt.Sprintf("%d:8080", h2))
	must(t, env, "port", "add", "--once", "pf", fmt.Sprintf("%d:8080", h3))
	if got := httpGet(t, h2); !strings.Contains(got, "served") {
		t.Fatalf("added forward: %q", got)
	}
	list := must(t, env, "port", "list", "pf")
	for _, want := range []string{fmt.Sprintf("127.0.0.1:%d 8080 kept", h1), fmt.Sprintf("127.0.0.1:%d 8080 kept", h2), fmt.Sprintf("127.0.0.1:%d 8080 once", h3)} {
		if !strings.Contains(squash(list), want) {
			t.Errorf("port list lacks %q:\n%s", want, list)
		}
	}
	fails(t, env, fmt.Sprintf("%d", h1), "port", "add", "pf", fmt.Sprintf("%d:9090", h1))
	must(t, env, "port", "rm", "pf", fmt.Sprint(h2))
	refusedClosed(t, h2)
	fails(t, env, "forwards no host port", "port", "rm", "pf", fmt.Sprint(h2))

	// After stop and start: kept forwards come back, --once ones do not.
	must(t, env, "stop", "pf")
	must(t, env, "start", "pf")
	must(t, env, "exec", "pf", "--", "sh", "-c", startHTTPD)
	if got := httpGet(t, h1); !strings.Contains(got, "served") {
		t.Fatalf("after restart: %q", got)
	}
	refusedClosed(t, h3)
	if list := must(t, env, "port", "list", "pf"); strings.Contains(list, fmt.Sprint(h3)) || strings.Contains(list, fmt.Sprint(h2)) {
		t.Errorf("port list after restart:\n%s", list)
	}
}

// squash collapses runs of spaces, for matching table rows.
func squash(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "\n")
}

// refusedClosed checks that nothing listens on the host port any more.
func refusedClosed(t *testing.T, port int) {
	t.Helper()
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Errorf("host port %d still listens", port)
	}
}

func TestAutoPorts(t *testing.T) {
	env := testHome(t)
	must(t, env, "create", "--name", "ap", "--memory", "512", "--auto-ports")
	guest := freePort(t) // free on the host, so auto-ports keeps the number
	must(t, env, "exec", "ap", "--", "sh", "-c", fmt.Sprintf("mkdir -p /srv && echo auto > /srv/index.html && (busybox httpd -p %d -h /srv &)", guest))
	started := time.Now()
	want := fmt.Sprintf("127.0.0.1:%d %d auto", guest, guest)
	for !strings.Contains(squash(must(t, env, "port", "list", "ap")), want) {
		if time.Since(started) > 3*time.Second {
			t.Fatalf("auto-ports did not pick up guest port %d within 3 s:\n%s", guest, must(t, env, "port", "list", "ap"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("picked up after %s", time.Since(started).Round(10*time.Millisecond))
	if got := httpGet(t, guest); !strings.Contains(got, "auto") {
		t.Fatalf("auto forward: %q", got)
	}
	must(t, env, "exec", "ap", "--", "sh", "-c", "kill $(cat /proc/[0-9]*/stat 2>/dev/null | awk '$2 == \"(busybox)\" {print $1}') 2>/dev/null; true")
	deadline := time.Now().Add(5 * time.Second)
	for strings.Contains(squash(must(t, env, "port", "list", "ap")), want) {
		if time.Now().After(deadline) {
			t.Fatal("the auto forward outlived the guest's server")
		}
		time.Sleep(200 * time.Millisecond)
	}
	log := must(t, env, "logs", "--owner", "ap")
	if !strings.Contains(log, fmt.Sprintf("auto-ports: guest port %d listens", guest)) || !strings.Contains(log, fmt.Sprintf("auto-ports: guest port %d closed", guest)) {
		t.Errorf("owner log:\n%s", log)
	}
}

// --host-loopback opens the host's 127.0.0.1 to the guest at 10.0.2.2,
// and only there.
func TestHostLoopback(t *testing.T) {
	env := testHome(t)
	port := hostOnlyServer(t)
	must(t, env, "create", "--name", "hl", "--memory", "384", "--host-loopback")
	if got := guestReachesHost(t, env, "hl", port); got != "reached via 10.0.2.2" {
		t.Errorf("with --host-loopback: %q, want reached via 10.0.2.2", got)
	}
	if out := must(t, env, "get", "--json", "hl"); !strings.Contains(out, `"host_loopback": true`) {
		t.Errorf("get --json does not show host_loopback:\n%s", out)
	}
}
