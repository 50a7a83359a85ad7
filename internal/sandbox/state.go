package sandbox

import (
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
}

// StopInfo is last_stop.json: when and why the VM last stopped.
type StopInfo struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
	Detail string    `json:"detail,omitempty"`
}

// Stop reasons.
const (
	StopRequested = "stopped"  // heyvm stop / rm / end of a foreground session
	StopExpired   = "expired"  // TTL ran out
	StopGuest     = "poweroff" // the guest powered itself off
	StopCrashed   = "crashed"  // the hypervisor died
	StopFailed    = "failed"   // boot or provisioning failed
)

// Status is what a sandbox is doing now.
type Status string

const (
	Running  Status = "running"  // owner alive, SSH ready
	Starting Status = "starting" // owner alive, not ready yet
	Stopped  Status = "stopped"
)

// State is a sandbox's live state, derived from the owner lock.
type State struct {
	Status   Status     `json:"status"`
	Owner    *OwnerInfo `json:"owner,omitempty"`
	LastStop *StopInfo  `json:"last_stop,omitempty"`
}

// ReadState derives the state: the owner is alive exactly when someone
// holds owner.lock. An owner.json whose owner is gone is stale (the owner
// was killed) and is removed here, so no file outlives the truth.
func ReadState(files layout.Sandbox) (State, error) {
	held, _, err := fsutil.HolderPID(files.OwnerLock())
	if err != nil {
		return State{}, err
	}
	var st State
	if ls, err := readJSON[StopInfo](files.LastStop()); err == nil {
		st.LastStop = ls
	}
	oi, oerr := readJSON[OwnerInfo](files.OwnerState())
	switch {
	case !held:
		st.Status = Stopped
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
	case oerr == nil:
		st.Status = Running
		st.Owner = oi
	default:
		st.Status = Starting
	}
	return st, nil
}

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
