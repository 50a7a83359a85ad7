package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSharesWithoutRootSaySo runs heyvm as nobody: a share needs Debian's
// virtiofsd, which needs root. heyvm must say so before it creates
// anything, never drop the mount.
func TestSharesWithoutRootSaySo(t *testing.T) {
	needVM(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	home, err := os.MkdirTemp("/tmp", "heyvm-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(home)
	bin := filepath.Join(home, "heyvm")
	b, _ := os.ReadFile(heyvmBin)
	os.WriteFile(bin, b, 0o755)
	share := filepath.Join(home, "share")
	os.Mkdir(share, 0o755)
	for _, p := range []string{home, share, bin} {
		os.Chown(p, 65534, 65534)
	}
	os.Chmod(home, 0o755)
	run := func(args ...string) (string, int) {
		cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", bin}, args...)...)
		cmd.Env = []string{"HEYO_HOME=" + filepath.Join(home, "state"), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		if err == nil {
			return errb.String(), 0
		}
		return errb.String(), 1
	}
	errOut, code := run("create", "--name", "x", "--mount", share+":/data")
	if code == 0 || !strings.Contains(errOut, "shared folders on Linux need root") {
		t.Fatalf("create --mount as nobody: %d %q", code, errOut)
	}
	if des, _ := os.ReadDir(filepath.Join(home, "state", "sandboxes")); len(des) > 1 {
		t.Fatalf("a refused create left %v", des)
	}
}
