// Package release checks how heyvm is released and installed: the
// GoReleaser configuration (with the pinned GoReleaser), the .deb it
// builds, the Homebrew formula, the release workflow, and `go install`
// from a module proxy. No VM boots here; installing the .deb and running
// its heyvm is test/integration's TestDebPackage.
//
// The checks that need GoReleaser (installed once per machine, minutes)
// or the network run when scripts/test.sh runs them: it builds the
// snapshot first and sets HEYVM_TEST_RELEASE=1 and HEYVM_TEST_DIST (the
// dist/ folder). Plain `go test ./...` skips them, saying why.
package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"github.com/heyvm/heyvm/internal/cli"
)

const repo = "../.."

func releaseChecksOn(t *testing.T) {
	t.Helper()
	if os.Getenv("HEYVM_TEST_RELEASE") != "1" {
		t.Skip("release checks run from scripts/test.sh (HEYVM_TEST_RELEASE=1): they install GoReleaser once per machine and use the Go module proxy")
	}
}

// need finds a tool; missing, it fails the release checks and skips
// otherwise.
func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("HEYVM_TEST_RELEASE") == "1" {
			t.Fatalf("%s is missing: apt-get install %s (scripts/install-deps.sh does)", tool, pkg)
		}
		t.Skipf("%s is missing (apt-get install %s)", tool, pkg)
	}
	return p
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	c := exec.Command(name, args...)
	c.Dir = dir
	if env != nil {
		c.Env = env
	}
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// goreleaserBinary is where scripts/goreleaser.sh keeps the pinned
// GoReleaser.
func goreleaserBinary(t *testing.T) (string, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "scripts/goreleaser.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^GORELEASER_VERSION=(\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("scripts/goreleaser.sh pins no GORELEASER_VERSION")
	}
	dir := os.Getenv("HEYVM_TOOLS_DIR")
	if dir == "" {
		dir = "/var/tmp/heyvm-tools"
	}
	return filepath.Join(dir, "goreleaser-"+string(m[1]), "goreleaser"), string(m[1])
}

// `goreleaser check` passes on the whole configuration (darwin included),
// with the pinned GoReleaser and the nfpm it brings.
func TestGoreleaserCheck(t *testing.T) {
	releaseChecksOn(t)
	out := run(t, repo, nil, "./scripts/goreleaser.sh", "check")
	t.Log(out)
	bin, ver := goreleaserBinary(t)
	mods := run(t, "", nil, "go", "version", "-m", bin)
	for _, want := range []string{"github.com/goreleaser/goreleaser/v2\t" + ver, "github.com/goreleaser/nfpm/v2\tv2.45.2"} {
		if !strings.Contains(mods, want) {
			t.Errorf("%s is not built from %q:\n%s", bin, want, mods)
		}
	}
}

// What `goreleaser check` cannot see: the darwin build is cgo and signed
// with the entitlements, the Linux builds are pure Go, and all three set
// the version the same way.
func TestGoreleaserConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repo, ".goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Builds []struct {
			ID      string   `yaml:"id"`
			Main    string   `yaml:"main"`
			Goos    []string `yaml:"goos"`
			Goarch  []string `yaml:"goarch"`
			Env     []string `yaml:"env"`
			Ldflags []string `yaml:"ldflags"`
			Skip    string   `yaml:"skip"`
			Hooks   struct {
				Post []string `yaml:"post"`
			} `yaml:"hooks"`
		} `yaml:"builds"`
		Nfpms []struct {
			IDs []string `yaml:"ids"`
		} `yaml:"nfpms"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, bd := range cfg.Builds {
		if bd.Main == "./cmd/heyvm-kubevirt" {
			// The KubeVirt plugin: pure Go on every target, no entitlement
			// (it starts no VM here), left out of snapshots only.
			if !slices.Contains(bd.Env, "CGO_ENABLED=0") || bd.Skip != "{{ .IsSnapshot }}" || !strings.Contains(strings.Join(bd.Ldflags, " "), "version.commit={{ .FullCommit }}") {
				t.Errorf("%s: want a pure Go build with the version, skipped in snapshots: %+v", bd.ID, bd)
			}
			continue
		}
		if bd.Main != "./cmd/heyvm" {
			t.Errorf("build %s of %q: an unknown program", bd.ID, bd.Main)
		}
		for _, os := range bd.Goos {
			for _, arch := range bd.Goarch {
				target := os + "/" + arch
				targets[target] = true
				cgo := slices.Contains(bd.Env, "CGO_ENABLED=1")
				if os == "darwin" {
					if !cgo || len(bd.Hooks.Post) == 0 || !strings.Contains(bd.Hooks.Post[0], "codesign") || !strings.Contains(bd.Hooks.Post[0], "build/heyvm.entitlements") {
						t.Errorf("%s: want cgo and a codesign with build/heyvm.entitlements after the build: %+v", target, bd)
					}
					if !strings.Contains(bd.Skip, ".IsSnapshot") {
						t.Errorf("%s may be skipped only in snapshots: skip %q", target, bd.Skip)
					}
				} else if !slices.Contains(bd.Env, "CGO_ENABLED=0") || bd.Skip != "" {
					t.Errorf("%s: want a pure Go build, never skipped: %+v", target, bd)
				}
				flags := strings.Join(bd.Ldflags, " ")
				for _, v := range []string{"version.version=", "version.commit={{ .FullCommit }}", "version.date="} {
					if !strings.Contains(flags, "github.com/heyvm/heyvm/internal/"+v) {
						t.Errorf("%s: ldflags %q do not set internal/%s", target, flags, v)
					}
				}
			}
		}
	}
	want := map[string]bool{"linux/amd64": true, "linux/arm64": true, "darwin/arm64": true}
	if fmt.Sprint(targets) != fmt.Sprint(want) {
		t.Errorf("targets %v, want %v", targets, want)
	}
	if len(cfg.Nfpms) != 2 {
		t.Errorf("want one .deb per Linux arch, got %d nfpms", len(cfg.Nfpms))
	}
}

func TestReleaseWorkflow(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repo, ".github/workflows/release.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		On struct {
			Push struct{ Tags []string } `yaml:"push"`
		} `yaml:"on"`
		Jobs map[string]struct {
			RunsOn string `yaml:"runs-on"`
			Steps  []struct {
				Run string `yaml:"run"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(wf.On.Push.Tags, "v*") {
		t.Error("the release workflow does not run on v* tags")
	}
	releases, formula := false, false
	for name, j := range wf.Jobs {
		for _, s := range j.Steps {
			if strings.Contains(s.Run, "scripts/goreleaser.sh release") {
				releases = true
				if !strings.HasPrefix(j.RunsOn, "macos") {
					t.Errorf("job %s runs GoReleaser on %s: the darwin build needs a Mac (cgo, codesign)", name, j.RunsOn)
				}
			}
			formula = formula || strings.Contains(s.Run, "scripts/render-formula.sh")
		}
	}
	if !releases || !formula {
		t.Errorf("the workflow releases: %v, publishes the formula: %v", releases, formula)
	}
}

// The formula passes `ruby -c`, as does the copy the release renders, and
// does what the README says.
func TestHomebrewFormula(t *testing.T) {
	ruby := need(t, "ruby", "ruby")
	path := filepath.Join(repo, "packaging/homebrew/heyvm.rb")
	run(t, "", nil, ruby, "-c", path)
	rendered := run(t, repo, nil, "./scripts/render-formula.sh", "v1.2.3", strings.Repeat("ab", 20))
	f := filepath.Join(t.TempDir(), "heyvm.rb")
	os.WriteFile(f, []byte(rendered), 0o644)
	run(t, "", nil, ruby, "-c", f)
	for _, want := range []string{`tag:      "v1.2.3"`, `revision: "` + strings.Repeat("ab", 20) + `"`} {
		if !strings.Contains(rendered, want) {
			t.Errorf("the rendered formula lacks %s", want)
		}
	}
	b, _ := os.ReadFile(path)
	for _, want := range []string{`depends_on "go" => :build`, `"codesign", "--force", "--sign", "-", "--entitlements", "build/heyvm.entitlements"`,
		`"./tools/gendocs"`, "man1.install", "bash_completion.install", "zsh_completion.install", "fish_completion.install",
		"test do", `#{bin}/heyvm version`, `#{bin}/heyvm backends`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the formula lacks %s", want)
		}
	}
	if _, err := exec.Command("./scripts/render-formula.sh", "1.2.3", "x").CombinedOutput(); err == nil {
		t.Error("render-formula accepted a tag without v and a short commit")
	}
}

// expectedManPages are the pages of every command a user can run, as
// tools/gendocs names them.
func expectedManPages() []string {
	root := cli.NewRoot(cli.IO{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard})
	root.InitDefaultCompletionCmd()
	var pages []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		pages = append(pages, strings.ReplaceAll(c.CommandPath(), " ", "-")+".1.gz")
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() && !s.IsAdditionalHelpTopicCommand() {
				walk(s)
			}
		}
	}
	walk(root)
	sort.Strings(pages)
	return pages
}

// distDir is the snapshot scripts/test.sh built (HEYVM_TEST_DIST).
func distDir(t *testing.T) string {
	t.Helper()
	releaseChecksOn(t)
	d := os.Getenv("HEYVM_TEST_DIST")
	if d == "" {
		t.Skip("HEYVM_TEST_DIST is not set: scripts/test.sh builds the snapshot (scripts/release-snapshot.sh) and sets it")
	}
	return d
}

func debFor(t *testing.T, dist, arch string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dist, "heyvm_*_"+arch+".deb"))
	if len(m) != 1 {
		t.Fatalf("want one heyvm_<version>_%s.deb in %s, found %v", arch, dist, m)
	}
	return m[0]
}

// The .debs: their fields, every file, the man pages (one per command),
// the completions, the binary's version and commit, and a postinst that
// changes nothing.
func TestDebPackages(t *testing.T) {
	dist := distDir(t)
	need(t, "dpkg-deb", "dpkg")
	depends := map[string]string{
		"amd64": "qemu-system-x86, qemu-system-common, qemu-utils, passt, uidmap",
		"arm64": "qemu-system-arm, qemu-system-common, qemu-utils, passt, uidmap",
	}
	recommends := map[string]string{
		"amd64": "mmdebstrap, e2fsprogs, kmod, git, openssh-client, ca-certificates, qemu-system-arm",
		"arm64": "mmdebstrap, e2fsprogs, kmod, git, openssh-client, ca-certificates",
	}
	suggests := map[string]string{
		"amd64": "qemu-user-static, binfmt-support, arch-test",
		"arm64": "qemu-system-x86, qemu-user-static, binfmt-support, arch-test",
	}
	head := ""
	if out, err := exec.Command("git", "-C", repo, "rev-parse", "HEAD").Output(); err == nil {
		head = strings.TrimSpace(string(out))
	}
	for _, arch := range []string{"amd64", "arm64"} {
		deb := debFor(t, dist, arch)
		t.Logf("%s:\n%s", deb, run(t, "", nil, "dpkg-deb", "-I", deb))
		field := func(name string) string {
			return strings.TrimSpace(run(t, "", nil, "dpkg-deb", "-f", deb, name))
		}
		if got := field("Package"); got != "heyvm" {
			t.Errorf("%s: Package %q", arch, got)
		}
		if got := field("Architecture"); got != arch {
			t.Errorf("%s: Architecture %q", arch, got)
		}
		version := field("Version")
		if want := "heyvm_" + version + "_" + arch + ".deb"; filepath.Base(deb) != want {
			t.Errorf("file %s, want %s", filepath.Base(deb), want)
		}
		for name, want := range map[string]string{"Depends": depends[arch], "Recommends": recommends[arch], "Suggests": suggests[arch]} {
			if got := field(name); got != want {
				t.Errorf("%s: %s: %q, want %q", arch, name, got, want)
			}
		}

		// Every file, by path and mode: nothing outside /usr, nothing in
		// /etc or a home directory.
		files := map[string]string{}
		for _, l := range strings.Split(run(t, "", nil, "dpkg-deb", "-c", deb), "\n") {
			f := strings.Fields(l)
			if len(f) < 6 || strings.HasSuffix(f[len(f)-1], "/") {
				continue
			}
			files[strings.TrimPrefix(f[len(f)-1], ".")] = f[0]
		}
		for path, mode := range map[string]string{
			"/usr/bin/heyvm": "-rwxr-xr-x",
			"/usr/share/bash-completion/completions/heyvm":    "-rw-r--r--",
			"/usr/share/zsh/vendor-completions/_heyvm":        "-rw-r--r--",
			"/usr/share/fish/vendor_completions.d/heyvm.fish": "-rw-r--r--",
			"/usr/share/doc/heyvm/README.md":                  "-rw-r--r--",
		} {
			if files[path] != mode {
				t.Errorf("%s: %s is %q, want %s", arch, path, files[path], mode)
			}
		}
		var pages []string
		for p := range files {
			if !strings.HasPrefix(p, "/usr/") {
				t.Errorf("%s: %s is outside /usr", arch, p)
			}
			if dir, name := filepath.Split(p); dir == "/usr/share/man/man1/" {
				pages = append(pages, name)
			}
		}
		sort.Strings(pages)
		if want := expectedManPages(); !slices.Equal(pages, want) {
			t.Errorf("%s: man pages\n%v\nwant one per command:\n%v", arch, pages, want)
		}

		x := t.TempDir()
		run(t, "", nil, "dpkg-deb", "-x", deb, x)
		run(t, "", nil, "dpkg-deb", "-e", deb, filepath.Join(x, "DEBIAN"))
		bin := filepath.Join(x, "usr/bin/heyvm")
		ef, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		if m := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]; ef.Machine != m {
			t.Errorf("%s: /usr/bin/heyvm is for %v", arch, ef.Machine)
		}
		ef.Close()
		if b, _ := os.ReadFile(filepath.Join(x, "usr/share/man/man1/heyvm-exec.1.gz")); !strings.Contains(gunzip(t, b), "heyvm exec ID") {
			t.Errorf("%s: heyvm-exec(1) does not show exec's usage", arch)
		}
		if b, _ := os.ReadFile(filepath.Join(x, "usr/share/bash-completion/completions/heyvm")); !strings.Contains(string(b), "__start_heyvm") {
			t.Errorf("%s: the bash completion is not cobra's", arch)
		}
		if arch == runtime.GOARCH {
			var v struct {
				Version string `json:"version"`
				Commit  string `json:"commit"`
				Date    string `json:"date"`
				Source  string `json:"source"`
			}
			out := run(t, "", nil, bin, "version", "--json")
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("version --json: %v\n%s", err, out)
			}
			// Debian writes a pre-release 1.2.3-dev as 1.2.3~dev.
			if "v"+strings.ReplaceAll(version, "~", "-") != v.Version || v.Date == "" || v.Source != "ldflags" {
				t.Errorf("the packaged heyvm says %s (package version %s)", out, version)
			}
			if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(v.Commit) || (head != "" && v.Commit != head) {
				t.Errorf("the packaged heyvm names commit %q, want HEAD %s", v.Commit, head)
			}
		}
		checkPostinst(t, filepath.Join(x, "DEBIAN", "postinst"))
	}
}

// The postinst only prints a note for the sudo user without subordinate
// ids; it writes nothing.
func checkPostinst(t *testing.T, script string) {
	t.Helper()
	before := map[string][]byte{}
	for _, f := range []string{"/etc/subuid", "/etc/subgid", "/etc/passwd", "/etc/group"} {
		before[f], _ = os.ReadFile(f)
	}
	postinst := func(env ...string) string {
		c := exec.Command("sh", script, "configure")
		c.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("postinst configure: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := postinst(); out != "" {
		t.Errorf("postinst without SUDO_USER said %q", out)
	}
	// nobody has no subordinate ids on any Debian machine.
	if out := postinst("SUDO_USER=nobody"); !strings.Contains(out, "usermod --add-subuids") || !strings.Contains(out, "nobody") {
		t.Errorf("postinst for a sudo user without subordinate ids: %q", out)
	}
	for f, b := range before {
		if now, _ := os.ReadFile(f); !bytes.Equal(now, b) {
			t.Errorf("postinst changed %s", f)
		}
	}
}

func gunzip(t *testing.T, b []byte) string {
	t.Helper()
	z, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// The archives and checksums.txt: every artefact is listed with its true
// sum, and each archive holds heyvm, the man pages and the completions.
func TestArchivesAndChecksums(t *testing.T) {
	dist := distDir(t)
	f, err := os.Open(filepath.Join(dist, "checksums.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("checksums.txt: %q", sc.Text())
		}
		b, err := os.ReadFile(filepath.Join(dist, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			t.Errorf("%s: sha256 differs from checksums.txt", name)
		}
		listed[name] = true
	}
	for _, pattern := range []string{"heyvm_*_linux_amd64.tar.gz", "heyvm_*_linux_arm64.tar.gz", "heyvm_*_amd64.deb", "heyvm_*_arm64.deb"} {
		m, _ := filepath.Glob(filepath.Join(dist, pattern))
		if len(m) != 1 || !listed[filepath.Base(m[0])] {
			t.Errorf("%s: %v, listed in checksums.txt: %v", pattern, m, listed)
			continue
		}
		if !strings.HasSuffix(pattern, ".tar.gz") {
			continue
		}
		names := map[string]bool{}
		b, _ := os.ReadFile(m[0])
		z, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(z)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			names[h.Name] = true
		}
		for _, want := range []string{"heyvm", "README.md", "man/heyvm.1.gz", "man/heyvm-exec.1.gz", "completions/heyvm.bash", "completions/_heyvm", "completions/heyvm.fish"} {
			if !names[want] {
				t.Errorf("%s lacks %s", filepath.Base(m[0]), want)
			}
		}
	}
}

// `go install github.com/heyvm/heyvm/cmd/heyvm@latest` gives a working
// heyvm: this tree served as v0.99.0 by a module proxy in a folder (the
// dependencies from the module cache, else the real proxy), installed
// from an empty GOPATH with GOFLAGS=-mod=mod, as a user's machine would.
func TestGoInstallLatest(t *testing.T) {
	releaseChecksOn(t)
	if runtime.GOOS != "linux" {
		t.Skip("go install gives a working heyvm on Linux; on macOS it lacks the entitlement (README)")
	}
	const modPath, ver = "github.com/heyvm/heyvm", "v0.99.0"
	tmp := t.TempDir()
	proxy := filepath.Join(tmp, "proxy")
	vdir := filepath.Join(proxy, modPath, "@v")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := moduleTree(t, filepath.Join(tmp, "src"))
	zf, err := os.Create(filepath.Join(vdir, ver+".zip"))
	if err != nil {
		t.Fatal(err)
	}
	if err := modzip.CreateFromDir(zf, module.Version{Path: modPath, Version: ver}, src); err != nil {
		t.Fatal(err)
	}
	zf.Close()
	gomod, _ := os.ReadFile(filepath.Join(src, "go.mod"))
	os.WriteFile(filepath.Join(vdir, ver+".mod"), gomod, 0o644)
	os.WriteFile(filepath.Join(vdir, ver+".info"), []byte(`{"Version":"`+ver+`","Time":"2025-01-01T00:00:00Z"}`), 0o644)
	os.WriteFile(filepath.Join(vdir, "list"), []byte(ver+"\n"), 0o644)

	modcache := strings.TrimSpace(run(t, "", nil, "go", "env", "GOMODCACHE"))
	upstream := strings.TrimSpace(run(t, "", nil, "go", "env", "GOPROXY"))
	gopath := filepath.Join(tmp, "gopath")
	var env []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case "GOPATH", "GOMODCACHE", "GOBIN", "GOFLAGS", "GOPROXY", "GONOSUMDB", "GOPRIVATE", "GONOPROXY", "GOWORK":
			continue
		}
		env = append(env, e)
	}
	env = append(env, "GOPATH="+gopath, "GOFLAGS=-mod=mod", "GOWORK=off", "GONOSUMDB="+modPath,
		"GOPROXY=file://"+proxy+",file://"+filepath.Join(modcache, "cache", "download")+","+upstream)
	work := t.TempDir() // outside any module
	run(t, work, env, "go", "install", modPath+"/cmd/heyvm@latest")
	bin := filepath.Join(gopath, "bin", "heyvm")
	defer exec.Command("chmod", "-R", "u+w", gopath).Run() // the module cache is read-only
	var v struct {
		Version string `json:"version"`
		Source  string `json:"source"`
	}
	out := run(t, "", nil, bin, "version", "--json")
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Version != ver || v.Source != "buildinfo" {
		t.Errorf("the go-installed heyvm says %s (%v), want version %s from the build information", out, err, ver)
	}
	if out := run(t, "", nil, bin, "backends"); !strings.Contains(out, "qemu ") {
		t.Errorf("backends: %q", out)
	}
}

// moduleTree copies the module's files (git's, tracked or not ignored;
// without git, all but .git, dist and bin) into dir, as a published
// version would hold them.
func moduleTree(t *testing.T, dir string) string {
	t.Helper()
	var files []string
	if out, err := exec.Command("git", "-C", repo, "ls-files", "-co", "--exclude-standard", "-z").Output(); err == nil {
		for _, f := range strings.Split(string(out), "\x00") {
			if f != "" {
				files = append(files, f)
			}
		}
	} else {
		filepath.WalkDir(repo, func(p string, d os.DirEntry, err error) error {
			rel, _ := filepath.Rel(repo, p)
			if d != nil && d.IsDir() && (rel == ".git" || rel == "dist" || rel == "bin" || rel == "build/gen") {
				return filepath.SkipDir
			}
			if err == nil && d.Type().IsRegular() {
				files = append(files, rel)
			}
			return nil
		})
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(repo, f))
		if err != nil {
			continue // deleted but not committed
		}
		dst := filepath.Join(dir, f)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
