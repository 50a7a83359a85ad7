package fsutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrLocked means another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// Lock is an flock(2) lock on a file. The kernel drops it when the holder
// dies, however it dies, which is why heyvm decides liveness by locks and
// not by pids (pids get reused).
type Lock struct {
	f *os.File
}

func openLockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}

// TryLock takes an exclusive lock without waiting. It returns ErrLocked if
// another process holds it.
func TryLock(path string) (*Lock, error) {
	f, err := openLockFile(path)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// LockContext takes an exclusive lock, waiting until it is free or ctx ends.
func LockContext(ctx context.Context, path string) (*Lock, error) {
	f, err := openLockFile(path)
	if err != nil {
		return nil, err
	}
	if err := flockContext(ctx, f, unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// flockContext blocks in flock(2) on a dedicated goroutine so the wait
// wakes the moment the holder lets go, not on a polling tick.
func flockContext(ctx context.Context, f *os.File, how int) error {
	// Dup the fd: if ctx ends first, closing the dup does not disturb f,
	// and a lock the goroutine takes late is released with the dup.
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		done <- unix.Flock(fd, how)
	}()
	select {
	case err := <-done:
		unix.Close(fd)
		return err
	case <-ctx.Done():
		go func() { <-done; unix.Flock(fd, unix.LOCK_UN); unix.Close(fd) }()
		return ctx.Err()
	}
}

// WriteOwnerPID records the holder's pid in the lock file, so that a
// process that finds the lock held knows whom to signal.
func (l *Lock) WriteOwnerPID(pid int) error {
	if err := l.f.Truncate(0); err != nil {
		return err
	}
	_, err := l.f.WriteAt([]byte(strconv.Itoa(pid)+"\n"), 0)
	return err
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// HolderPID reports whether someone holds the lock at path and, if so, the
// pid they recorded (0 if none yet). It never blocks.
func HolderPID(path string) (held bool, pid int, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return false, 0, err
		}
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b[:n])))
		return true, pid, nil
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false, 0, nil
}

// WaitUnlocked blocks until nobody holds the lock at path, or ctx ends.
func WaitUnlocked(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := flockContext(ctx, f, unix.LOCK_SH); err != nil {
		return err
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return nil
}
