package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/layout"
)

// OwnerInfo is owner.json, written by the owner once SSH is ready and
// removed when the VM stops.
type OwnerInfo struct {
	PID         int                   `json:"pid"`
	GuestIP     string                `json:"guest_ip"`
	SSHHost     string                `json:"ssh_host"`
	SSHPort     int                   `json:"ssh_port"`
	StartedAt   time.Time             `json:"started_at"`
	Accelerator string                `json:"accelerator"`
	Ports       []backend.PortForward `json:"ports,omitempty"`
	ExpiresAt   *time.Time            `json:"expires_at,omitempty"`
	Detached    bool                  `json:"detached"`
	// Paused is set while the VM is paused (by a host I/O error, say).
	Paused *PauseInfo `json:"paused,omitempty"`
	// BrokenShares lists shares whose server died under the running VM.
	BrokenShares []string `json:"broken_shares,omitempty"`
	// Boot says how this run began: "cold" (booted), "warm" (restored
	// from a ready snapshot) or "resumed" (from stop --suspend);
	// ColdWhy says why a sandbox made for a warm start booted cold.
	Boot    string `json:"boot,omitempty"`
	ColdWhy string `json:"cold_why,omitempty"`
	// SSHSockKey is the host key (authorized_keys form) of the owner's
	// shared SSH connection on ssh.sock; empty when there is none.
	SSHSockKey string `json:"ssh_sock_key,omitempty"`
}

// PauseInfo says why and since when a running sandbox's VM is paused.
type PauseInfo struct {
	Reason  string    `json:"reason"`
	Since   time.Time `json:"since"`
	NoSpace bool      `json:"no_space,omitempty"` // the host disk is full
}

// StopInfo is last_stop.json: when and why the VM last stopped.
type StopInfo struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
	Detail string    `json:"detail,omitempty"`
}

// Stop reasons.
const (
	StopRequested = "stopped"   // heyvm stop / rm / end of a foreground session
	StopExpired   = "expired"   // TTL ran out
	StopIdle      = "idle"      // unused for its idle_stop time (the image builder)
	StopGuest     = "poweroff"  // the guest powered itself off
	StopCrashed   = "crashed"   // the hypervisor died
	StopFailed    = "failed"    // boot or provisioning failed
	StopSuspended = "suspended" // heyvm stop --suspend saved the VM
)

// Status is what a sandbox is doing now.
type Status string

const (
	Running  Status = "running"  // owner alive, SSH ready
	Paused   Status = "paused"   // owner alive, VM paused (owner.json says why)
	Starting Status = "starting" // owner alive, not ready yet
	Stopped  Status = "stopped"
	// Suspended: no owner, and suspend.json names a saved VM that
	// `heyvm start` resumes.
	Suspended Status = "suspended"
	// Damaged: its sandbox.yaml cannot be read (list shows it as such;
	// `heyvm rm --force ID` removes it).
	Damaged Status = "damaged"
)

// State is a sandbox's live state, derived from the owner lock.
type State struct {
	Status   Status       `json:"status"`
	Owner    *OwnerInfo   `json:"owner,omitempty"`
	LastStop *StopInfo    `json:"last_stop,omitempty"`
	Suspend  *SuspendInfo `json:"suspended,omitempty"`
	// OwnerDamaged says why a running sandbox has no owner information
	// (Owner is nil): its owner.json is damaged beyond the owner's repair.
	OwnerDamaged string `json:"owner_damaged,omitempty"`
}

// SuspendInfo describes a saved VM (suspend.json).
type SuspendInfo struct {
	At         time.Time `json:"at"`
	Hypervisor string    `json:"hypervisor"` // what saved it, e.g. "QEMU 7.2.19"
	StateBytes int64     `json:"state_bytes"`
	// DiskBytes is what the state takes on disk: less than StateBytes
	// where the memory in it is sparse.
	DiskBytes int64  `json:"disk_bytes,omitempty"`
	GuestIP   string `json:"guest_ip"`
	// The machine's shape when saved: a restore needs the same.
	CPUs         int  `json:"cpus"`
	MemoryMiB    int  `json:"memory_mib"`
	HostLoopback bool `json:"host_loopback,omitempty"`
}

// WriteSuspendInfo marks the sandbox suspended. The state file must be in
// place (fsynced) first.
func WriteSuspendInfo(files layout.Sandbox, si SuspendInfo) error {
	return writeJSON(files.SuspendInfo(), si)
}

// ReadSuspendInfo returns the saved VM's record, nil if there is none. A
// record whose state file is gone or of another size is no saved VM.
func ReadSuspendInfo(files layout.Sandbox) (*SuspendInfo, error) {
	si, err := readJSON[SuspendInfo](files.SuspendInfo())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(files.SuspendState())
	if err != nil || fi.Size() != si.StateBytes {
		return nil, fmt.Errorf("the saved state of this sandbox is incomplete (%s)", files.SuspendState())
	}
	return si, nil
}

// DiscardSuspend removes a saved VM: the marker first, so that a crash
// halfway leaves no marker pointing at a partial file.
func DiscardSuspend(files layout.Sandbox) error {
	if err := os.Remove(files.SuspendInfo()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	os.Remove(files.SuspendTemp())
	if err := os.Remove(files.SuspendState()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ReadState derives the state: the owner is alive exactly when someone
// holds owner.lock. An owner.json whose owner is gone is stale (the owner
// was killed) and is removed here, so no file outlives the truth.
func ReadState(files layout.Sandbox) (State, error) {
	held, _, err := fsutil.HolderPID(files.OwnerLock())
	if err != nil {
		return State{}, unreadable(err, files.OwnerLock())
	}
	var st State
	if ls, err := readJSON[StopInfo](files.LastStop()); err == nil {
		st.LastStop = ls
	}
	oi, oerr := readJSON[OwnerInfo](files.OwnerState())
	switch {
	case !held:
		st.Status = Stopped
		// A damaged record still says suspended: `heyvm start` then
		// explains, and `start --cold` discards it.
		if _, err := os.Stat(files.SuspendInfo()); err == nil {
			st.Status = Suspended
			st.Suspend, _ = ReadSuspendInfo(files)
		}
		if oerr == nil || !errors.Is(oerr, os.ErrNotExist) {
			// Take the lock before removing, so an owner that started
			// since the check above cannot lose its fresh owner.json.
			l, err := fsutil.TryLock(files.OwnerLock())
			if errors.Is(err, fsutil.ErrLocked) {
				return ReadState(files) // an owner started meanwhile: read again
			}
			if err != nil {
				return State{}, err
			}
			os.Remove(files.OwnerState())
			l.Unlock()
			if st.LastStop == nil || (oi != nil && st.LastStop.At.Before(oi.StartedAt)) {
				st.LastStop = &StopInfo{At: time.Now().UTC(), Reason: StopCrashed, Detail: "its owner process died without cleaning up"}
				WriteStopInfo(files, *st.LastStop)
			}
		}
	case oerr != nil && !errors.Is(oerr, os.ErrNotExist):
		// A live owner whose owner.json is damaged: ask it to write the
		// file again, and read that; if it cannot, say so, with the way
		// out, rather than "starting" for ever.
		if RewriteOwnerInfo != nil && RewriteOwnerInfo(files) == nil {
			if oi, oerr = readJSON[OwnerInfo](files.OwnerState()); oerr == nil {
				st.setRunning(files, oi)
				return st, nil
			}
		}
		st.Status = Running
		st.OwnerDamaged = fmt.Sprintf("%s is damaged and its owner did not write it again", files.OwnerState())
	case oerr == nil:
		st.setRunning(files, oi)
	default:
		st.Status = Starting
	}
	return st, nil
}

// setRunning fills in a live owner's state.
func (st *State) setRunning(files layout.Sandbox, oi *OwnerInfo) {
	st.Status = Running
	// pause.json is the truth about pauses (see WritePause).
	if oi.Paused = ReadPause(files); oi.Paused != nil {
		st.Status = Paused
	}
	st.Owner = oi
}

// RewriteOwnerInfo asks a sandbox's live owner to write its owner.json
// again (the owner package sets it: the request goes over the owner's
// control socket, which this package does not speak).
var RewriteOwnerInfo func(files layout.Sandbox) error

// WriteOwnerInfo writes owner.json atomically.
func WriteOwnerInfo(files layout.Sandbox, oi OwnerInfo) error {
	return writeJSON(files.OwnerState(), oi)
}

// WriteStopInfo writes last_stop.json atomically.
func WriteStopInfo(files layout.Sandbox, si StopInfo) error {
	return writeJSON(files.LastStop(), si)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, append(b, '\n'), 0o600)
}

func readJSON[T any](path string) (*T, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &v, nil
}

// pauseRecordSize is the fixed size of pause.json: one block, allocated
// up front and overwritten in place, never grown.
const pauseRecordSize = 4096

// ReservePause allocates pause.json (empty: not paused). The owner calls
// it while there is room, before the VM runs.
func ReservePause(files layout.Sandbox) error {
	return os.WriteFile(files.PauseState(), padRecord(nil), 0o600)
}

// WritePause records (or, with nil, clears) a pause by overwriting the
// reserved record in one write: no block is allocated, so it works on a
// full disk. A torn record reads as "not paused"; the owner rewrites it
// on the next change.
func WritePause(files layout.Sandbox, p *PauseInfo) error {
	f, err := os.OpenFile(files.PauseState(), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(padRecord(p), 0); err != nil {
		return err
	}
	return f.Sync()
}

// ReadPause reads pause.json; nil means not paused (or unreadable).
func ReadPause(files layout.Sandbox) *PauseInfo {
	b, err := os.ReadFile(files.PauseState())
	if err != nil {
		return nil
	}
	var p PauseInfo
	if json.Unmarshal(bytes.TrimRight(b, " \n\x00"), &p) != nil || p.Reason == "" {
		return nil
	}
	return &p
}

func padRecord(p *PauseInfo) []byte {
	b := []byte("{}")
	if p != nil {
		b, _ = json.Marshal(p)
	}
	if len(b) > pauseRecordSize-1 {
		b = b[:0]
	}
	out := bytes.Repeat([]byte{' '}, pauseRecordSize)
	copy(out, b)
	out[pauseRecordSize-1] = '\n'
	return out
}
