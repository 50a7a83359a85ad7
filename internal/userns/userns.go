// Package userns runs helpers as "root" inside a user namespace, so an
// ordinary user can do what used to need sudo: assemble an image's root
// file system with real owners (uid 0, setuid bits), and serve shared
// folders with virtiofsd. The namespace maps the user to root and the
// user's subordinate range (/etc/subuid, /etc/subgid) to uids 1 and up,
// through util-linux's unshare and shadow's newuidmap/newgidmap.
package userns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
)

// Range is a subordinate id range.
type Range struct{ Start, Count int }

// Host is what Check looks at; tests replace its fields.
type Host struct {
	UID        int
	User       string
	SubUIDFile string
	SubGIDFile string
	ProcSys    string // /proc/sys
	LookPath   func(string) (string, error)
}

// ThisHost describes the running process's host.
func ThisHost() Host {
	h := Host{UID: os.Getuid(), SubUIDFile: "/etc/subuid", SubGIDFile: "/etc/subgid", ProcSys: "/proc/sys", LookPath: exec.LookPath}
	if u, err := user.Current(); err == nil {
		h.User = u.Username
	}
	return h
}

// Config is a usable namespace setup.
type Config struct {
	UIDs, GIDs Range
}

// Check finds out whether an ordinary user can run helpers in a user
// namespace here, and if not, says in one line what to run to fix it.
func (h Host) Check() (Config, error) {
	for _, tool := range []string{"unshare", "newuidmap", "newgidmap"} {
		if _, err := h.LookPath(tool); err != nil {
			pkg := "uidmap"
			if tool == "unshare" {
				pkg = "util-linux"
			}
			return Config{}, fmt.Errorf("%s is missing: heyvm needs it to work without root; run `sudo apt-get install %s`", tool, pkg)
		}
	}
	if v, err := os.ReadFile(h.ProcSys + "/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(v)) == "0" {
		return Config{}, errors.New("unprivileged user namespaces are switched off (kernel.unprivileged_userns_clone=0): run `sudo sysctl -w kernel.unprivileged_userns_clone=1` (and put it in /etc/sysctl.d/ to keep it)")
	}
	if v, err := os.ReadFile(h.ProcSys + "/kernel/apparmor_restrict_unprivileged_userns"); err == nil && strings.TrimSpace(string(v)) == "1" {
		return Config{}, errors.New("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1): run `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or add an AppArmor profile that allows userns for unshare")
	}
	if v, err := os.ReadFile(h.ProcSys + "/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(v)) == "0" {
		return Config{}, errors.New("user namespaces are switched off (user.max_user_namespaces=0): run `sudo sysctl -w user.max_user_namespaces=15000`")
	}
	var c Config
	var err error
	if c.UIDs, err = h.subRange(h.SubUIDFile); err != nil {
		return Config{}, err
	}
	if c.GIDs, err = h.subRange(h.SubGIDFile); err != nil {
		return Config{}, err
	}
	return c, nil
}

// subRange finds the user's first range in a subuid/subgid file, by name
// or by uid, as newuidmap does.
func (h Host) subRange(path string) (Range, error) {
	free := h.FreeRange()
	fix := fmt.Sprintf("run `sudo usermod --add-subuids %d-%d --add-subgids %d-%d %s`", free.Start, free.Start+free.Count-1, free.Start, free.Start+free.Count-1, h.nameOrUID())
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return Range{}, fmt.Errorf("%s does not exist, so you have no subordinate ids for heyvm's user namespace: %s", path, fix)
	}
	if err != nil {
		return Range{}, err
	}
	defer f.Close()
	r, ok, err := parseSubIDs(f, h.User, h.UID)
	if err != nil {
		return Range{}, fmt.Errorf("%s: %w", path, err)
	}
	if !ok {
		return Range{}, fmt.Errorf("%s has no range for %s, so heyvm cannot map the guest's users: %s", path, h.nameOrUID(), fix)
	}
	if r.Count < 65536 {
		return Range{}, fmt.Errorf("%s gives %s only %d subordinate ids; a guest needs 65536: %s", path, h.nameOrUID(), r.Count, fix)
	}
	return r, nil
}

// FreeRange is a range of Count ids that no line of the subuid or subgid
// file holds yet (the lowest from 100000 on, as useradd picks them): what
// to give a user who has none.
func (h Host) FreeRange() Range {
	var taken []Range
	for _, path := range []string{h.SubUIDFile, h.SubGIDFile} {
		if b, err := os.ReadFile(path); err == nil {
			taken = append(taken, allRanges(string(b))...)
		}
	}
	start := 100000
	for again := true; again; {
		again = false
		for _, r := range taken {
			if start < r.Start+r.Count && r.Start < start+Count {
				start = r.Start + r.Count // overlaps: try just past it
				again = true
			}
		}
	}
	return Range{Start: start, Count: Count}
}

// allRanges reads every well-formed range of a subuid/subgid file.
func allRanges(text string) []Range {
	var out []Range
	for _, line := range strings.Split(text, "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		count, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && start >= 0 && count > 0 {
			out = append(out, Range{Start: start, Count: count})
		}
	}
	return out
}

func (h Host) nameOrUID() string {
	if h.User != "" {
		return h.User
	}
	return strconv.Itoa(h.UID)
}

func parseSubIDs(r io.Reader, name string, uid int) (Range, bool, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 || (f[0] != name && f[0] != strconv.Itoa(uid)) {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		count, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || start < 0 || count <= 0 {
			return Range{}, false, fmt.Errorf("bad line %q", line)
		}
		return Range{Start: start, Count: count}, true, nil
	}
	return Range{}, false, sc.Err()
}

// Count is how many ids the namespace maps besides root: a full 16-bit
// guest id space.
const Count = 65536

// Args is the unshare command line that runs argv as root in a fresh
// user and mount namespace: the user as root, subordinate ids as 1..65535.
func (c Config) Args(argv ...string) []string {
	n := min(Count-1, c.UIDs.Count, c.GIDs.Count)
	return append([]string{"unshare", "--map-root-user",
		fmt.Sprintf("--map-users=%d,1,%d", c.UIDs.Start, n),
		fmt.Sprintf("--map-groups=%d,1,%d", c.GIDs.Start, n),
		"--setgroups", "allow", "--mount", "--propagation", "private", "--"}, argv...)
}

// Command is exec.CommandContext of Args.
func (c Config) Command(ctx context.Context, argv ...string) *exec.Cmd {
	a := c.Args(argv...)
	return exec.CommandContext(ctx, a[0], a[1:]...)
}

// Rootless reports whether heyvm runs as an ordinary user.
func Rootless() bool { return os.Geteuid() != 0 }

// RemoveAll removes a tree. Files owned by subordinate ids (an image
// build's staging root) cannot be removed by the user directly; they are
// removed from inside the namespace.
func RemoveAll(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || !Rootless() || !errors.Is(err, os.ErrPermission) {
		return err
	}
	c, cerr := ThisHost().Check()
	if cerr != nil {
		return err
	}
	if out, rerr := c.Command(context.Background(), "rm", "-rf", "--one-file-system", dir).CombinedOutput(); rerr != nil {
		return fmt.Errorf("remove %s: %v: %s", dir, rerr, strings.TrimSpace(string(out)))
	}
	return nil
}
