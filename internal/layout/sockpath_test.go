package layout

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A Mac user with a 30-character name: the sandbox's sockets fit macOS's
// 104-byte sun_path as they are; a ready snapshot's build folder does
// not, and gets a short stand-in that every process computes alike.
func TestSocketPathLongUserName(t *testing.T) {
	root := Root{Dir: "/Users/" + strings.Repeat("a", 30) + "/.heyo"}
	sb := root.Sandbox("0123456789ab")
	for _, p := range []string{
		filepath.Join(sb.Dir, "control.sock"), filepath.Join(sb.Dir, "console.sock"), filepath.Join(sb.Dir, "ssh.sock"),
	} {
		if !SocketPathFits(p, "darwin") {
			t.Errorf("%s (%d bytes) does not fit macOS", p, len(p))
		}
		if got := socketPathIn(t.TempDir(), 501, "darwin", p); got != p {
			t.Errorf("a path that fits was moved: %s -> %s", p, got)
		}
	}
	build := filepath.Join(root.WarmDir("apple_virt", "debian:12"), ".b-arm64-4cpu-4096m-c", "control.sock")
	if SocketPathFits(build, "darwin") {
		t.Fatalf("%s (%d bytes) fits: the test needs a longer one", build, len(build))
	}
	base := t.TempDir()
	short := socketPathIn(base, 501, "darwin", build)
	if short == build || !SocketPathFits(short, "darwin") || !strings.HasPrefix(short, filepath.Join(base, "heyvm-501")+"/") || !strings.HasSuffix(short, "-control.sock") {
		t.Fatalf("stand-in %q", short)
	}
	if again := socketPathIn(base, 501, "darwin", build); again != short {
		t.Fatalf("not the same in every call: %s, %s", short, again)
	}
	other := socketPathIn(base, 501, "darwin", filepath.Join(filepath.Dir(build), "ssh.sock"))
	if other == short {
		t.Fatal("two sockets share a stand-in")
	}
	fi, err := os.Stat(filepath.Dir(short))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("stand-in directory: %v %v", fi.Mode(), err)
	}
	// Linux's sun_path is 108 bytes.
	if !SocketPathFits(strings.Repeat("x", 107), "linux") || SocketPathFits(strings.Repeat("x", 108), "linux") || SocketPathFits(strings.Repeat("x", 104), "darwin") || !SocketPathFits(strings.Repeat("x", 103), "darwin") {
		t.Error("limits")
	}
}

// The stand-in directory is never one that another user made or a
// symlink: then the long path is kept (and binding it fails as before).
func TestSocketPathUnsafeDir(t *testing.T) {
	long := "/" + strings.Repeat("d", 120) + "/control.sock"
	base := t.TempDir()
	elsewhere := t.TempDir()
	if err := os.Symlink(elsewhere, filepath.Join(base, "heyvm-7")); err != nil {
		t.Fatal(err)
	}
	if got := socketPathIn(base, 7, "linux", long); got != long {
		t.Fatalf("used a symlinked directory: %s", got)
	}
	// A loose directory of this user's is tightened.
	loose := filepath.Join(base, "heyvm-8")
	os.Mkdir(loose, 0o777)
	os.Chmod(loose, 0o777)
	if got := socketPathIn(base, 8, "linux", long); filepath.Dir(got) != loose {
		t.Fatalf("%s", got)
	}
	if fi, _ := os.Stat(loose); fi.Mode().Perm() != 0o700 {
		t.Fatalf("left %v", fi.Mode().Perm())
	}
}

// On this system: a socket whose own path is too long cannot be bound,
// and its stand-in can.
func TestSocketPathListens(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skip("unix sockets")
	}
	dir := t.TempDir()
	for len(dir) < SunPathMax(runtime.GOOS) {
		dir = filepath.Join(dir, strings.Repeat("s", 40))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(dir, "control.sock")
	if l, err := net.Listen("unix", long); err == nil {
		l.Close()
		t.Fatalf("bound %d bytes: the limit is not what SunPathMax says", len(long))
	}
	base, err := os.MkdirTemp("/tmp", "sp") // t.TempDir is too deep on macOS
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	short := socketPathIn(base, os.Getuid(), runtime.GOOS, long)
	l, err := net.Listen("unix", short)
	if err != nil {
		t.Fatalf("stand-in %s: %v", short, err)
	}
	l.Close()
}

// The sandbox's socket accessors go through SocketPath: the usual layout
// is unchanged, and a sandbox too deep gets stand-ins that fit.
func TestSandboxSocketsFit(t *testing.T) {
	sb := Root{Dir: "/home/u/.heyo"}.Sandbox("0123456789ab")
	if sb.ControlSock() != "/home/u/.heyo/sandboxes/0123456789ab/control.sock" || sb.SSHSock() != "/home/u/.heyo/sandboxes/0123456789ab/ssh.sock" ||
		sb.ConsoleSock() != "/home/u/.heyo/sandboxes/0123456789ab/console.sock" {
		t.Fatalf("%s %s %s", sb.ControlSock(), sb.SSHSock(), sb.ConsoleSock())
	}
	deep := Root{Dir: "/home/u/" + strings.Repeat("x", 100)}.Sandbox("0123456789ab")
	for _, p := range []string{deep.ControlSock(), deep.SSHSock(), deep.ConsoleSock()} {
		if !SocketPathFits(p, runtime.GOOS) || strings.HasPrefix(p, deep.Dir) {
			t.Errorf("%s", p)
		}
	}
}
