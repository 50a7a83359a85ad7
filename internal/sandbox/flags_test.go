package sandbox

import (
	"strings"
	"testing"
)

func TestParseMount(t *testing.T) {
	dir := t.TempDir()
	m, err := ParseMount(dir+":/workspace:ro", 2)
	if err != nil || m.HostPath != dir || m.GuestPath != "/workspace" || !m.ReadOnly || m.Tag != "m2" {
		t.Fatalf("%+v %v", m, err)
	}
	for in, want := range map[string]string{
		"/does/not/exist:/data": "does not exist",
		dir + ":data":           "relative",
		dir + ":/etc/x":         "system directory",
		dir + ":/usr":           "system directory",
		dir + ":/":              "hide",
		dir + ":/root":          "hide",
		dir:                     "HOST:GUEST",
		dir + ":/a:rx":          "HOST:GUEST",
		dir + ":/a b":           "whitespace",
	} {
		if _, err := ParseMount(in, 0); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMount(%q) = %v, want %q", in, err, want)
		}
	}
	if _, err := ParseMount(dir+":/root/project", 0); err != nil {
		t.Errorf("below /root refused: %v", err)
	}
}

func TestParsePort(t *testing.T) {
	for in, want := range map[string][2]int{"8080": {8080, 8080}, "18080:80": {18080, 80}} {
		p, err := ParsePort(in)
		if err != nil || p.HostPort != want[0] || p.GuestPort != want[1] {
			t.Errorf("ParsePort(%q) = %+v, %v", in, p, err)
		}
	}
	for _, bad := range []string{"", "x", "0", "70000", "1:2:3", "0.0.0.0:80:80", "a:80"} {
		if _, err := ParsePort(bad); err == nil {
			t.Errorf("ParsePort(%q) accepted", bad)
		}
	}
}
