package owner

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/hostinfo"
	"github.com/heyvm/heyvm/internal/sandbox"
)

// ResumeMargin is how much free space a full host disk must have again
// before the owner resumes a VM it paused, by itself or when asked.
const ResumeMargin = 256 * hostinfo.MiB

// ResumeSignal asks a running owner to resume its paused VM now
// (`heyvm start` on a paused sandbox sends it).
const ResumeSignal = syscall.SIGUSR1

// followEvents applies the machine's run-state changes to owner.json and
// the owner log, for as long as the session lives. Before the guest is
// ready, a host I/O error fails the boot at once, with its reason.
func (s *Session) followEvents(bootFail context.CancelCauseFunc) {
	resume := make(chan os.Signal, 1)
	signal.Notify(resume, ResumeSignal)
	defer signal.Stop(resume)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var ioErr *backend.Event
	for {
		select {
		case <-s.stopped:
			return
		case ev := <-s.machine.Events():
			switch ev.Kind {
			case backend.EventIOError:
				ioErr = &ev
				reason := s.ioErrorReason(ev)
				if !s.isReady() {
					bootFail(fmt.Errorf("the guest's disk cannot be written: %s", reason))
					continue
				}
				s.setPause(&sandbox.PauseInfo{Reason: reason, NoSpace: ev.NoSpace})
			case backend.EventPaused:
				if ioErr == nil && s.isReady() && !s.isSuspending() {
					s.setPause(&sandbox.PauseInfo{Reason: "paused by the hypervisor"})
				}
			case backend.EventResumed:
				ioErr = nil
				s.setPause(nil)
			case backend.EventShareBroken:
				s.addBrokenShare(ev.Detail)
			}
		case <-tick.C:
			s.log.flush()
			// A full disk: resume by itself once there is room again.
			if ioErr != nil && ioErr.NoSpace {
				if sp, err := hostinfo.FreeSpace(s.sb.Files.Dir); err == nil && sp.Free >= ResumeMargin {
					fmt.Fprintf(s.log, "owner: %d MB free again on %s: resuming the VM\n", sp.Free/hostinfo.MiB, sp.MountPoint)
					s.resume()
				} else if err == nil {
					s.setPause(&sandbox.PauseInfo{Reason: diskFullReason(sp), NoSpace: true})
				}
			}
		case <-resume:
			if s.currentPause() != nil {
				fmt.Fprintf(s.log, "owner: resume requested\n")
				s.resume()
			}
		}
	}
}

func (s *Session) resume() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.machine.Resume(ctx); err != nil {
		fmt.Fprintf(s.log, "owner: resume failed: %v\n", err)
	}
}

// ioErrorReason words a host I/O error for `list`: a full disk names the
// file system and what is left on it.
func (s *Session) ioErrorReason(ev backend.Event) string {
	if ev.NoSpace {
		if sp, err := hostinfo.FreeSpace(s.sb.Files.Dir); err == nil {
			return diskFullReason(sp)
		}
		return "host disk full"
	}
	return "host I/O error: " + ev.Detail
}

func diskFullReason(sp hostinfo.Space) string {
	return fmt.Sprintf("host disk full: %d MB free on %s", sp.Free/hostinfo.MiB, sp.MountPoint)
}

func (s *Session) isSuspending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.suspending
}

func (s *Session) isReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

func (s *Session) currentPause() *sandbox.PauseInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Info.Paused
}

// setPause records (or, with nil, clears) the pause in owner.json and
// logs each change once.
func (s *Session) setPause(p *sandbox.PauseInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return
	}
	old := s.Info.Paused
	switch {
	case p == nil && old == nil:
		return
	case p == nil:
		fmt.Fprintf(s.log, "owner: VM resumed after %s paused (%s)\n", time.Since(old.Since).Round(time.Second), old.Reason)
	case old == nil:
		p.Since = time.Now().UTC()
		fmt.Fprintf(s.log, "owner: VM paused: %s\n", p.Reason)
	default:
		if old.Reason == p.Reason {
			return
		}
		p.Since = old.Since
	}
	s.Info.Paused = p
	// pause.json, not owner.json: it must be writable on a full disk.
	if err := sandbox.WritePause(s.sb.Files, p); err != nil {
		fmt.Fprintf(s.log, "owner: cannot record the pause: %v\n", err)
	}
}

func (s *Session) addBrokenShare(detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return
	}
	fmt.Fprintf(s.log, "owner: shared folder broken: %s; the VM keeps running, restart the sandbox to get the share back\n", detail)
	s.Info.BrokenShares = append(s.Info.BrokenShares, detail)
	if s.ready {
		sandbox.WriteOwnerInfo(s.sb.Files, s.Info)
	}
}

// retryLog is the owner's log writer. A line that cannot be written (the
// host disk is full, which is when the log matters most) is kept and
// written with the next one that can, instead of being lost.
type retryLog struct {
	mu      sync.Mutex
	w       io.Writer
	pending []byte
}

func newRetryLog(w io.Writer) *retryLog { return &retryLog{w: w} }

func (l *retryLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending)+len(p) <= 64<<10 {
		l.pending = append(l.pending, p...)
	}
	l.flushLocked()
	return len(p), nil
}

func (l *retryLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
}

func (l *retryLog) flushLocked() {
	for len(l.pending) > 0 {
		n, err := l.w.Write(l.pending)
		l.pending = l.pending[n:]
		if err != nil {
			return
		}
	}
	l.pending = nil
}
