package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hostBuildTools are the programs of the host build (mmdebstrap,
// e2fsprogs' mkfs, debootstrap) that are on this machine: the in-VM build
// test hides them, as on a machine that has only heyvm and its backend.
func hostBuildTools() []string {
	var found []string
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if n := e.Name(); n == "mmdebstrap" || n == "debootstrap" || n == "mke2fs" || strings.HasPrefix(n, "mkfs.") {
				found = append(found, filepath.Join(d, n))
			}
		}
	}
	return found
}

// packagesIn lists a running sandbox's installed packages: name version.
func packagesIn(t *testing.T, run func(args ...string) string, name string) map[string]string {
	t.Helper()
	out := run("exec", name, "--", "dpkg-query", "-W", "-f", "${Package} ${Version}\n")
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			m[f[0]] = f[1]
		}
	}
	return m
}

// The default image built inside a VM, as an ordinary user on a host
// without mmdebstrap or mkfs.ext4: it boots, has the same packages as
// the host build of the same recipe, keeps the packages it downloaded,
// and a build killed halfway leaves the image it would have replaced.
func TestImagesBuildInVM(t *testing.T) {
	needVM(t)
	p := makeUser(t, rootlessUser, true)
	defer p.cleanup()
	p.hide = hostBuildTools()
	start := time.Now()
	out, errOut, code := p.runWithin(40*time.Minute, "", "images", "build-default", "--in-vm")
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("images build-default --in-vm: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("the default image built in a VM in %s:\n%s", took.Round(time.Second), errOut)
	var meta struct {
		Build struct {
			BuiltIn string `json:"built_in"`
		} `json:"build"`
		SHA256 map[string]string `json:"sha256"`
	}
	if err := json.Unmarshal([]byte(p.must(t, "", "images", "inspect", "--json", "debian:12")), &meta); err != nil || !strings.HasPrefix(meta.Build.BuiltIn, "vm (qemu") {
		t.Fatalf("image.yaml does not say it was built in a VM: %v %+v", err, meta)
	}
	// It boots, answers, and holds what the host build holds.
	p.must(t, "", "create", "--name", "vmb", "--memory", "512")
	if got := p.must(t, "", "exec", "vmb", "--", "sh", "-c", "hostname; test -x /etc/heyvm/rc.sysinit && echo heyvm-init; ls /lib/modules"); !strings.HasPrefix(got, "vmb\nheyvm-init\n6.") {
		t.Errorf("the VM-built image's sandbox: %q", got)
	}
	inVM := packagesIn(t, func(a ...string) string { return p.must(t, "", a...) }, "vmb")
	onHost := packagesIn(t, func(a ...string) string { return must(t, sharedEnv, a...) }, shared)
	var onlyVM, onlyHost, versions []string
	for n, v := range inVM {
		switch hv, ok := onHost[n]; {
		case !ok:
			onlyVM = append(onlyVM, n)
		case hv != v:
			versions = append(versions, fmt.Sprintf("%s %s (host build %s)", n, v, hv))
		}
	}
	for n := range onHost {
		if _, ok := inVM[n]; !ok {
			onlyHost = append(onlyHost, n)
		}
	}
	sort.Strings(onlyVM)
	sort.Strings(onlyHost)
	if len(onlyVM)+len(onlyHost) > 0 {
		t.Errorf("the VM build's packages differ from the host build's: only in the VM build %v; only in the host build %v", onlyVM, onlyHost)
	}
	t.Logf("%d packages in both; versions that differ (the archive moved between the builds): %v", len(inVM), versions)
	p.must(t, "", "rm", "--force", "--yes", "vmb")

	// Again: nothing is downloaded (the packages are cached by digest).
	// Killed once past the downloads, the build leaves the image as it was.
	cmd := p.cmd(context.Background(), "", p.bin, "images", "build-default", "--in-vm", "--force")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.Contains(sc.Text(), "building image: packages:") {
			break
		}
	}
	signalHeyvm(t, cmd, syscall.SIGTERM)
	go io.Copy(io.Discard, stderr)
	err := cmd.Wait()
	summary := lines[len(lines)-1]
	if !strings.Contains(summary, "packages: 0 fetched") {
		t.Errorf("the second build downloaded packages again: %q", summary)
	}
	if err == nil {
		t.Errorf("a build killed halfway exited 0")
	}
	var after struct {
		SHA256 map[string]string `json:"sha256"`
	}
	json.Unmarshal([]byte(p.must(t, "", "images", "inspect", "--json", "debian:12")), &after)
	if after.SHA256["rootfs.img"] != meta.SHA256["rootfs.img"] {
		t.Errorf("a killed build changed the image")
	}
	if left, _ := filepath.Glob(filepath.Join(p.home, "images", "qemu", ".build-*")); len(left) > 0 {
		t.Errorf("a killed build left %v", left)
	}
}

// tamperingMirror is a proxy in front of Debian's mirror that changes one
// byte of the files match picks (the first one only, if once is set).
func tamperingMirror(t *testing.T, match func(path string) bool, once bool) *httptest.Server {
	var mu sync.Mutex
	done := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := http.Get("http://deb.debian.org" + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		mu.Lock()
		if resp.StatusCode == 200 && match(r.URL.Path) && !(once && done) && len(body) > 100 {
			done = true
			body = bytes.Clone(body)
			body[len(body)/2] ^= 0x20
		}
		mu.Unlock()
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A mirror that serves anything that does not verify is refused, naming
// the file, and nothing is installed: a signed InRelease changed by one
// byte, a Packages index, a package.
func TestImagesBuildInVMRefusesTampering(t *testing.T) {
	needVM(t)
	for _, c := range []struct {
		what  string
		match func(string) bool
		want  string
	}{
		{"InRelease", func(p string) bool { return strings.HasSuffix(p, "/InRelease") }, "InRelease"},
		{"Packages", func(p string) bool { return strings.Contains(p, "/binary-amd64/") }, "binary-amd64/"},
		{"a .deb", func(p string) bool { return strings.HasSuffix(p, ".deb") }, ".deb"},
	} {
		srv := tamperingMirror(t, c.match, true)
		// A store of its own (test homes share the cached images), with
		// no packages cached.
		store := t.TempDir()
		env := append(os.Environ(), "HEYO_HOME="+store, "HEYVM_DEBIAN_MIRROR="+srv.URL+"/debian")
		_, errOut, code := runWithin(10*time.Minute, env, "", "images", "build-default", "--in-vm")
		if code == 0 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "refusing it") {
			t.Errorf("a mirror that tampers with %s: exit %d\n%s", c.what, code, errOut)
		}
		if out := must(t, env, "images", "list"); strings.Contains(out, "debian:12") {
			t.Errorf("a refused build left an image:\n%s", out)
		}
		if left, _ := filepath.Glob(filepath.Join(store, "images", "qemu", ".build-*")); len(left) > 0 {
			t.Errorf("a refused build left %v", left)
		}
	}
}
