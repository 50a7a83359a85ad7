//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heyvm/heyvm/internal/backend"
)

// Saving and restoring a whole machine is QEMU's migration to and from a
// file descriptor: `migrate fd:` on a file handed over QMP, and
// `-incoming fd:` on the new qemu, started with -S so it stays paused
// until the caller is ready for the guest to run.

// saveFDName is the name the saved-state file gets inside qemu (getfd).
const saveFDName = "heyvm-save"

// Save writes the machine's state to path; see backend.Machine.
func (m *machine) Save(ctx context.Context, path string) error {
	if m.shares > 0 {
		return errors.New("it has shared folders, and QEMU before 8.2 cannot save a VM with virtio-fs devices (8.2 also needs a virtiofsd that can migrate, which Debian's does not); stop it instead")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("saved state: %w", err)
	}
	ok := false
	defer func() {
		f.Close()
		if !ok {
			os.Remove(path)
		}
	}()
	// No bandwidth cap: the default (128 MiB/s) is for live migration
	// over a network, where the guest keeps running.
	if _, err := m.qmp.execute("migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}); err != nil {
		return err
	}
	// The memory goes apart, after the device state (memory.go).
	if err := m.ignoreSharedMemory(); err != nil {
		return err
	}
	layout := savedLayout{MemoryBytes: m.memoryBytes, StateOffset: savedHeader + m.memoryBytes}
	if _, err := f.Seek(layout.StateOffset, io.SeekStart); err != nil {
		return fmt.Errorf("saved state: %w", err)
	}
	if _, err := m.qmp.execute("stop", nil); err != nil {
		return err
	}
	cont := func() { m.qmp.execute("cont", nil) }
	if err := m.qmp.sendFD("getfd", map[string]string{"fdname": saveFDName}, f); err != nil {
		cont()
		return err
	}
	if _, err := m.qmp.execute("migrate", map[string]string{"uri": "fd:" + saveFDName}); err != nil {
		cont()
		return err
	}
	if err := m.waitMigration(ctx); err != nil {
		m.qmp.execute("migrate_cancel", nil)
		cont()
		return err
	}
	if err := saveMemory(m.memory, f, m.memoryBytes); err != nil {
		cont()
		return err
	}
	if err := writeSavedLayout(f, layout); err != nil {
		cont()
		return fmt.Errorf("saved state: %w", err)
	}
	if err := f.Sync(); err != nil {
		cont()
		return fmt.Errorf("saved state: %w", err)
	}
	ok = true
	return nil
}

// ignoreSharedMemory leaves the guest's memory (shared: the memfd) out
// of the migration stream; heyvm moves it itself.
func (m *machine) ignoreSharedMemory() error {
	_, err := m.qmp.execute("migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}})
	return err
}

// startIncoming loads a saved machine's device state (-incoming defer)
// once its memory is in place.
func (m *machine) startIncoming(memoryLoaded <-chan error) error {
	if err := <-memoryLoaded; err != nil {
		return err
	}
	if err := m.ignoreSharedMemory(); err != nil {
		return err
	}
	_, err := m.qmp.execute("migrate-incoming", map[string]string{"uri": fmt.Sprintf("fd:%d", restoreFD)})
	return err
}

// waitMigration polls query-migrate until the outgoing migration ends.
func (m *machine) waitMigration(ctx context.Context) error {
	for {
		raw, err := m.qmp.execute("query-migrate", nil)
		if err != nil {
			return err
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		json.Unmarshal(raw, &st)
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("qemu could not save the VM: %s %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.done:
			return errors.New("qemu exited while saving the VM")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitIncoming waits until qemu has loaded a saved state (-incoming); it
// is then paused (-S). A state qemu cannot load ends qemu, with its
// reason on stderr.
func (m *machine) waitIncoming(ctx context.Context) error {
	for {
		raw, err := m.qmp.execute("query-status", nil)
		if err != nil {
			return err
		}
		var st struct {
			Status string `json:"status"`
		}
		json.Unmarshal(raw, &st)
		if st.Status != "inmigrate" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.done:
			return errors.New("qemu exited while loading the saved state")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// sendFD runs a QMP command with f passed alongside (SCM_RIGHTS), as
// getfd wants.
func (c *qmpClient) sendFD(cmd string, args any, f *os.File) error {
	uc, ok := c.conn.(*net.UnixConn)
	if !ok {
		return errors.New("qmp: the monitor is not a unix socket; cannot pass a file")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b, _ := json.Marshal(map[string]any{"execute": cmd, "arguments": args})
	if _, _, err := uc.WriteMsgUnix(append(b, '\n'), unix.UnixRights(int(f.Fd())), nil); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	return c.awaitReply(cmd)
}

func (m *machine) Hypervisor() string { return m.qmp.version }

// plugShares adds the spec's shares to a restored machine: each virtiofsd
// socket as a chardev, and a vhost-user-fs device in a spare root port.
// The guest sees them once it runs, and mounts them by tag.
func (m *machine) plugShares(spec backend.Spec, sockets []string) error {
	for i, mt := range spec.Mounts {
		id := fmt.Sprintf("vfs%d", i)
		chardev := map[string]any{"id": id, "backend": map[string]any{"type": "socket", "data": map[string]any{
			"addr": map[string]any{"type": "unix", "data": map[string]string{"path": sockets[i]}}, "server": false}}}
		if _, err := m.qmp.execute("chardev-add", chardev); err != nil {
			return fmt.Errorf("add share %s to the restored VM: %w", mt.GuestPath, err)
		}
		dev := map[string]any{"driver": "vhost-user-fs-pci", "id": id + "dev", "chardev": id, "tag": mt.Tag, "bus": fmt.Sprintf("hp%d", i)}
		if _, err := m.qmp.execute("device_add", dev); err != nil {
			return fmt.Errorf("add share %s to the restored VM: %w", mt.GuestPath, err)
		}
	}
	return nil
}
