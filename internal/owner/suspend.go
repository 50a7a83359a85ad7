package owner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
)

// SuspendTimeout bounds saving a VM; a few hundred MB under load.
const SuspendTimeout = 5 * time.Minute

// Suspend saves the whole running VM into the sandbox directory and ends
// the session; `heyvm start` resumes it where it was.
//
// Crash safety: the state is written to suspend.state.tmp, synced, and
// renamed; suspend.json, the marker, comes last. An owner killed on the
// way leaves at most a temp file, which the next start removes, and a
// sandbox that says stopped, which it then is (qemu dies with its owner).
func (s *Session) Suspend(ctx context.Context) (sandbox.SuspendInfo, error) {
	files := s.sb.Files
	s.mu.Lock()
	busy := s.stopping || !s.ready || s.suspending
	if !busy {
		s.suspending = true
	}
	s.mu.Unlock()
	if busy {
		return sandbox.SuspendInfo{}, errors.New("it is starting, stopping or already being suspended")
	}
	clear := func() { s.mu.Lock(); s.suspending = false; s.mu.Unlock() }
	if p := s.currentPause(); p != nil {
		clear()
		return sandbox.SuspendInfo{}, fmt.Errorf("it is paused (%s): resume it first", p.Reason)
	}
	start := time.Now()
	// The guest's unwritten data goes to the disk first: should the saved
	// state ever be discarded (start --cold), the disk is still whole.
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	if c, done, err := s.guestSSH(sctx); err == nil {
		sshclient.Exec(sctx, c, sshclient.ExecOptions{Command: "sync"})
		done()
	}
	cancel()
	s.dropGuestSSH()
	os.Remove(files.SuspendTemp())
	if err := s.machine.Save(ctx, files.SuspendTemp()); err != nil {
		clear()
		return sandbox.SuspendInfo{}, err
	}
	if !s.beginStop() {
		os.Remove(files.SuspendTemp())
		return sandbox.SuspendInfo{}, errors.New("it was stopped meanwhile")
	}
	si := sandbox.SuspendInfo{
		At: time.Now().UTC(), Hypervisor: s.machine.Hypervisor(), GuestIP: s.Info.GuestIP,
		CPUs: s.sb.Config.CPUs, MemoryMiB: s.sb.Config.MemoryMiB, HostLoopback: s.sb.Config.HostLoopback,
	}
	err := func() error {
		fi, err := os.Stat(files.SuspendTemp())
		if err != nil {
			return err
		}
		si.StateBytes, si.DiskBytes = fi.Size(), fsutil.AllocatedBytes(fi)
		if err := os.Rename(files.SuspendTemp(), files.SuspendState()); err != nil {
			return err
		}
		if err := fsutil.SyncDir(files.Dir); err != nil {
			return err
		}
		return sandbox.WriteSuspendInfo(files, si)
	}()
	s.machine.Kill()
	<-s.machine.Done()
	if err != nil {
		sandbox.DiscardSuspend(files)
		s.finish(sandbox.StopFailed, "suspend failed: "+err.Error())
		return si, fmt.Errorf("the VM was saved but could not be recorded (%v); it is stopped", err)
	}
	s.finish(sandbox.StopSuspended, fmt.Sprintf("%d MB saved in %s", si.DiskBytes>>20, time.Since(start).Round(time.Millisecond)))
	return si, nil
}

// savedVM returns the saved VM a start should resume, nil for none. A
// record it cannot use is an error that says how to go on.
func savedVM(sb *sandbox.Sandbox) (*sandbox.SuspendInfo, error) {
	files, cfg := sb.Files, sb.Config
	os.Remove(files.SuspendTemp()) // a save that never finished
	si, err := sandbox.ReadSuspendInfo(files)
	if si == nil && err == nil {
		return nil, nil
	}
	if err == nil && (si.CPUs != cfg.CPUs || si.MemoryMiB != cfg.MemoryMiB || si.HostLoopback != cfg.HostLoopback) {
		err = fmt.Errorf("it was saved with %d CPUs and %d MiB, and its sandbox.yaml now asks for %d and %d", si.CPUs, si.MemoryMiB, cfg.CPUs, cfg.MemoryMiB)
	}
	if err != nil {
		return nil, resumeError(cfg.Name, si, err)
	}
	return si, nil
}

// resumeError words a failed resume with the way out.
func resumeError(name string, si *sandbox.SuspendInfo, err error) error {
	by := ""
	if si != nil && si.Hypervisor != "" {
		by = " (saved by " + si.Hypervisor + ")"
	}
	return fmt.Errorf("cannot resume sandbox %s from its saved state%s: %v; `heyvm start --cold %s` boots its disk instead and discards the saved state", name, by, err, name)
}

// clockCommand sets the guest's clock to now, to the nanosecond.
func clockCommand(now time.Time) string {
	return fmt.Sprintf("date -u -s @%d.%09d >/dev/null", now.Unix(), now.Nanosecond())
}

// renewScript asks the guest's DHCP client (busybox udhcpc, found by
// argv[0] or, for the applet, argv[1]: a match anywhere in a command line
// finds this script's own shell, which USR1 would kill) for a renewal and waits (10 s at most) for the lease hook to
// record a lease, then prints the uplink's address. A guest that still has
// its address renews it (the server may refuse it, and the client then
// starts over); one that lost it cannot send a unicast renewal from it,
// so its client releases first and asks afresh by broadcast.
const renewScript = `bb=/bin/busybox; p=; ` +
	`for d in /proc/[0-9]*; do set -f; set -- $($bb tr '\000' ' ' <$d/cmdline 2>/dev/null); set +f; ` +
	`case "${1##*/} ${2:-}" in "udhcpc "*|"busybox udhcpc") case " $* " in *" eth0 "*) p=${d#/proc/};; esac;; esac; done; ` +
	`[ -n "$p" ] || { echo "no DHCP client runs on eth0"; exit 3; }; ` +
	`if [ -z "$($bb ip -4 -o addr show dev eth0)" ]; then kill -USR2 $p; $bb usleep 300000; fi; ` +
	`rm -f /run/heyvm-dhcp.last; kill -USR1 $p; ` +
	`i=0; while [ $i -lt 100 ]; do case "$(cat /run/heyvm-dhcp.last 2>/dev/null)" in bound|renew) break;; esac; $bb usleep 100000; i=$((i+1)); done; ` +
	`echo "IP $($bb ip -4 -o addr show dev eth0)"`

// renewLease renews a resumed guest's lease and returns its address.
func renewLease(ctx context.Context, c *ssh.Client) (string, error) {
	var out bytes.Buffer
	code, err := sshclient.Exec(ctx, c, sshclient.ExecOptions{Command: renewScript, Stdout: &out})
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("exit %d: %s", code, strings.TrimSpace(out.String()))
	}
	m := inetRe.FindStringSubmatch(out.String())
	if m == nil {
		return "", fmt.Errorf("no address on eth0 after the renewal: %q", strings.TrimSpace(out.String()))
	}
	return m[1], nil
}
