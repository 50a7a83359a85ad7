package hostinfo

import (
	"strings"
	"testing"
)

func TestFreeSpaceAndMountPoint(t *testing.T) {
	dir := t.TempDir()
	sp, err := FreeSpace(dir + "/not/yet/there")
	if err != nil || sp.Free <= 0 || sp.Total < sp.Free || sp.MountPoint == "" {
		t.Fatalf("%+v %v", sp, err)
	}
	if mp := MountPoint("/"); mp != "/" {
		t.Fatalf("MountPoint(/) = %q", mp)
	}
	if err := NeedSpace(dir, 1, "a test"); err != nil {
		t.Fatal(err)
	}
	err = NeedSpace(dir, sp.Total*2, "a sandbox")
	if err == nil || !strings.Contains(err.Error(), "not enough free space on "+sp.MountPoint+" for a sandbox") {
		t.Fatalf("too much: %v", err)
	}
}

func TestTotalMemory(t *testing.T) {
	n, err := TotalMemory()
	if err != nil || n < 64*MiB {
		t.Fatalf("%d %v", n, err)
	}
}
