package applevirt

import (
	"errors"
	"strings"
	"testing"

	"github.com/heyvm/heyvm/internal/backend"
)

// Below macOS 14, VZ's save/restore calls abort the process: the gate must
// answer from the version alone, in one line, and never reach the
// framework; from 14 on, the framework's verdict decides.
func TestSaveRestoreGate(t *testing.T) {
	for _, tc := range []struct {
		version string
		readErr error
		want    string // "" for allowed
	}{
		{version: "13.6", want: "need macOS 14 or newer on apple_virt (this Mac runs macOS 13.6)"},
		{version: "13.6.7\n", want: "macOS 13.6.7)"},
		{version: "12.7", want: "macOS 12.7"},
		{version: "10.16", want: "macOS 10.16"}, // what an old-SDK compatibility mode reports
		{version: "14.0"},
		{version: "15.1"},
		{version: "26.0.1"},
		{version: "garbage", want: `cannot read the macOS version "garbage"`},
		{version: "", want: "cannot read the macOS version"},
		{version: "-3.1", want: "cannot read the macOS version"},
		{readErr: errors.New("sysctl: no such entry"), want: "cannot read this Mac's version: sysctl: no such entry"},
	} {
		called := false
		validate := func() (bool, error) { called = true; return true, nil }
		read := func() (string, error) { return tc.version, tc.readErr }
		err := checkSaveRestore(read, validate)
		if tc.want == "" {
			if err != nil || !called {
				t.Errorf("%q: %v (framework asked: %v)", tc.version, err, called)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.version, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "macOS 14")) {
			t.Errorf("%q: not one line naming macOS 14: %q", tc.version, err)
		}
		if called {
			t.Errorf("%q: the framework was asked below macOS 14 (it would abort the process)", tc.version)
		}
	}
	// On macOS 14 the framework's refusal and its error come through.
	read14 := func() (string, error) { return "14.5", nil }
	if err := checkSaveRestore(read14, func() (bool, error) { return false, nil }); err == nil || !strings.Contains(err.Error(), "cannot save this VM's configuration") {
		t.Errorf("refused configuration: %v", err)
	}
	if err := checkSaveRestore(read14, func() (bool, error) { return false, errors.New("Unsupported console device") }); err == nil || !strings.Contains(err.Error(), "Unsupported console device") {
		t.Errorf("framework error: %v", err)
	}
	if CheckSaveRestoreOS("14.0") != nil || CheckSaveRestoreOS("13.6") == nil {
		t.Error("CheckSaveRestoreOS")
	}
}

// A sandbox restores only its own saved state (beside its machine
// identifier); a ready snapshot of another VM is refused as a restore the
// backend does not do, so the owner boots cold.
func TestRestoreSource(t *testing.T) {
	own := backend.Spec{RunDir: "/u/.heyo/sandboxes/0123456789ab", RestoreFrom: "/u/.heyo/sandboxes/0123456789ab/suspend.state"}
	if err := checkRestoreSource(own); err != nil {
		t.Fatalf("own state refused: %v", err)
	}
	if err := checkRestoreSource(backend.Spec{RunDir: own.RunDir}); err != nil {
		t.Fatalf("plain boot refused: %v", err)
	}
	snap := backend.Spec{RunDir: own.RunDir, RestoreFrom: "/u/.heyo/cache/warm/apple_virt/debian:12/arm64-2cpu-2048m-c/suspend.state"}
	err := checkRestoreSource(snap)
	if !errors.Is(err, backend.ErrRestoreUnsupported) || !strings.Contains(err.Error(), "boot cold") {
		t.Fatalf("snapshot restore: %v", err)
	}
	if _, err := BuildPlan(backend.Spec{Arch: "arm64", CPUs: 1, MemoryMiB: 512, Cmdline: "console=hvc0", MAC: "02:00:00:00:00:01", RunDir: snap.RunDir, RestoreFrom: snap.RestoreFrom}, "/k"); !errors.Is(err, backend.ErrRestoreUnsupported) {
		t.Fatalf("BuildPlan let a snapshot restore through: %v", err)
	}
}

// Warm start is off on apple_virt, with one line that says why and that
// sandboxes boot cold.
func TestCanWarmStart(t *testing.T) {
	err := canWarmStart()
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("%q", err)
	}
	for _, want := range []string{"apple_virt", "MAC", "machine identifier", "boot cold"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}
