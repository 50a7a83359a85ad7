package userns

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fakeHost(t *testing.T) Host {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sys", "kernel"), 0o755)
	os.MkdirAll(filepath.Join(dir, "sys", "user"), 0o755)
	os.WriteFile(filepath.Join(dir, "subuid"), []byte("other:100000:65536\nalice:165536:65536\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "subgid"), []byte("# comment\n1000:200000:70000\n"), 0o644)
	return Host{
		UID: 1000, User: "alice",
		SubUIDFile: filepath.Join(dir, "subuid"), SubGIDFile: filepath.Join(dir, "subgid"),
		ProcSys:  filepath.Join(dir, "sys"),
		LookPath: func(s string) (string, error) { return "/usr/bin/" + s, nil },
	}
}

func TestCheckFindsRanges(t *testing.T) {
	c, err := fakeHost(t).Check()
	if err != nil {
		t.Fatal(err)
	}
	if c.UIDs != (Range{165536, 65536}) || c.GIDs != (Range{200000, 70000}) {
		t.Fatalf("ranges: %+v", c)
	}
	args := strings.Join(c.Args("virtiofsd", "-o", "x"), " ")
	want := "unshare --map-root-user --map-users=165536,1,65535 --map-groups=200000,1,65535 --setgroups allow --mount --propagation private -- virtiofsd -o x"
	if args != want {
		t.Fatalf("args:\n%s\nwant\n%s", args, want)
	}
}

func TestCheckErrorsSayWhatToRun(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(h *Host)
		want   string
	}{
		{"no subuid range", func(h *Host) { os.WriteFile(h.SubUIDFile, []byte("bob:1:65536\n"), 0o644) }, "has no range for alice"},
		{"no subgid file", func(h *Host) { os.Remove(h.SubGIDFile) }, "usermod --add-subuids"},
		{"small range", func(h *Host) { os.WriteFile(h.SubUIDFile, []byte("alice:100000:1000\n"), 0o644) }, "only 1000 subordinate ids"},
		{"no newuidmap", func(h *Host) {
			h.LookPath = func(s string) (string, error) {
				if s == "newuidmap" {
					return "", errors.New("not found")
				}
				return s, nil
			}
		}, "apt-get install uidmap"},
		{"userns clone off", func(h *Host) {
			os.WriteFile(filepath.Join(h.ProcSys, "kernel", "unprivileged_userns_clone"), []byte("0\n"), 0o644)
		}, "sysctl -w kernel.unprivileged_userns_clone=1"},
		{"apparmor restriction", func(h *Host) {
			os.WriteFile(filepath.Join(h.ProcSys, "kernel", "apparmor_restrict_unprivileged_userns"), []byte("1\n"), 0o644)
		}, "apparmor_restrict_unprivileged_userns=0"},
		{"max namespaces 0", func(h *Host) {
			os.WriteFile(filepath.Join(h.ProcSys, "user", "max_user_namespaces"), []byte("0\n"), 0o644)
		}, "user.max_user_namespaces"},
	}
	for _, c := range cases {
		h := fakeHost(t)
		c.break_(&h)
		_, err := h.Check()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is more than one line: %q", c.name, err)
		}
	}
}

func TestFreeRangeAvoidsTakenRanges(t *testing.T) {
	dir := t.TempDir()
	h := Host{UID: 1001, User: "bob", SubUIDFile: filepath.Join(dir, "subuid"), SubGIDFile: filepath.Join(dir, "subgid")}
	for _, c := range []struct {
		name, subuid, subgid string
		want                 int
	}{
		{"no files", "", "", 100000},
		{"one user", "alice:100000:65536\n", "alice:100000:65536\n", 165536},
		{"gids differ", "alice:100000:65536\n", "alice:100000:65536\ncarol:165536:65536\n", 231072},
		{"a gap too small", "a:100000:65536\nb:170000:65536\n", "", 235536},
		{"a gap that fits", "a:100000:65536\nb:300000:65536\n# comment\nbroken line\n", "", 165536},
		{"below the floor", "root:0:99999\n", "", 100000},
	} {
		os.WriteFile(h.SubUIDFile, []byte(c.subuid), 0o644)
		os.WriteFile(h.SubGIDFile, []byte(c.subgid), 0o644)
		if got := h.FreeRange(); got.Start != c.want || got.Count != Count {
			t.Errorf("%s: %+v, want start %d", c.name, got, c.want)
		}
	}
	// The hint names the free range.
	os.WriteFile(h.SubUIDFile, []byte("alice:100000:65536\n"), 0o644)
	os.WriteFile(h.SubGIDFile, []byte("alice:100000:65536\n"), 0o644)
	if _, err := h.subRange(h.SubUIDFile); err == nil || !strings.Contains(err.Error(), "--add-subuids 165536-231071 --add-subgids 165536-231071 bob") {
		t.Errorf("hint: %v", err)
	}
}
