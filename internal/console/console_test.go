package console

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeGuest answers like the guest's console shell: it echoes input,
// runs nothing, but replies to marker commands the way sh would.
func fakeGuest(t *testing.T, c net.Conn, status int) {
	fmt.Fprintf(c, "booting...\r\nHEYVM-READY 3.21\r\nroot@heyvm:~# ")
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if strings.HasPrefix(line, "}") {
			continue
		}
		fmt.Fprintf(c, "%s\r\n", strings.TrimSpace(line)) // tty echo, with the marker format
		var nonce string
		if i := strings.Index(line, "HEYVM-BEGIN "); i >= 0 {
			nonce = strings.Fields(line[i+len("HEYVM-BEGIN "):])[0]
			nonce = strings.TrimSuffix(nonce, ";")
			fmt.Fprintf(c, "HEYVM-BEGIN-%s\r\nIP 2: eth0 inet 10.0.2.15/24 scope global\r\nline two\r\nHEYVM-END-%s %d\r\n", nonce, nonce, status)
		}
	}
}

func TestReadyAndRun(t *testing.T) {
	host, guest := net.Pipe()
	go fakeGuest(t, guest, 7)
	var log bytes.Buffer
	d := New(host, &lockedBuf{b: &log})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	up, err := d.WaitReady(ctx)
	if err != nil || up != "3.21" {
		t.Fatalf("WaitReady = %q, %v", up, err)
	}
	out, status, err := d.Run(ctx, "echo hi")
	if err != nil || status != 7 || out != "IP 2: eth0 inet 10.0.2.15/24 scope global\nline two" {
		t.Fatalf("Run = %q, %d, %v", out, status, err)
	}
	guest.Close()
	<-d.Done()
	if _, err := d.WaitReady(ctx); err == nil {
		t.Fatal("wait on a closed console succeeded")
	}
}

func TestBootFailedLine(t *testing.T) {
	host, guest := net.Pipe()
	go fmt.Fprintf(guest, "HEYVM-FAILED initramfs: root device /dev/vda did not appear\n")
	d := New(host, nil)
	_, err := d.WaitReady(context.Background())
	if err == nil || !strings.Contains(err.Error(), "did not appear") {
		t.Fatalf("err = %v", err)
	}
}

func TestWaitReadyTimesOut(t *testing.T) {
	host, _ := net.Pipe()
	d := New(host, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := d.WaitReady(ctx); err != context.DeadlineExceeded {
		t.Fatalf("err = %v", err)
	}
}

func TestBoundedLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	l, err := OpenBoundedLog(p, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		io.WriteString(l, "0123456789")
	}
	l.Close()
	a, _ := os.Stat(p)
	b, _ := os.Stat(p + ".1")
	if a.Size() > 100 || b.Size() > 100 || a.Mode().Perm() != 0o600 {
		t.Fatalf("sizes %d %d mode %v", a.Size(), b.Size(), a.Mode())
	}
}

type lockedBuf struct{ b *bytes.Buffer }

func (l *lockedBuf) Write(p []byte) (int, error) { return l.b.Write(p) }
