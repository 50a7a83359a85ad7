package main

import (
	"strings"
	"testing"
)

func TestCatchesBrokenVZCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks vz from source")
	}
	_, errs := Check("testdata/broken")
	var all []string
	for _, e := range errs {
		all = append(all, e.Error())
	}
	joined := strings.Join(all, "\n")
	if !strings.Contains(joined, "NewLinuxBootLoaderr") || !strings.Contains(joined, "Reboot") {
		t.Fatalf("darwincheck missed the broken calls:\n%s", joined)
	}
}

func TestRealBackendIsClean(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks vz from source")
	}
	checked, errs := Check("../../internal/backend/applevirt")
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	if len(checked) == 0 {
		t.Fatal("nothing checked")
	}
}
