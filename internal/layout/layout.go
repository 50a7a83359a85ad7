// Package layout names every file and directory heyvm keeps on disk. It is
// the one place to look to learn where a sandbox or an image lives.
//
//	$HEYO_HOME (default ~/.heyo)                  0700
//	├── config.yaml                               the user's settings (optional)
//	├── keys/id_ed25519{,.pub}                    managed SSH key pair (0600)
//	├── images/<backend>/<name>/                  one image
//	│   ├── vmlinuz, initrd, rootfs.img
//	│   └── image.yaml
//	├── images/<backend>/.build-*/                an image being built (never valid)
//	├── images/<backend>/.pull-<digest>/          a pull or import in progress (resumable)
//	├── cache/oci/<backend>/<name>.json           manifest of the last push, to skip recompressing
//	├── cache/warm/<backend>/<image>/<shape>/     a ready snapshot (laid out as a sandbox directory:
//	│                                             rootfs.img, suspend.state, suspend.json) + warm.json
//	└── sandboxes/<id>/                           one sandbox
//	    ├── sandbox.yaml                          what the user asked for
//	    ├── rootfs.img                            copy-on-write clone of the image rootfs (apple_virt)
//	    ├── base.img, [warm.qcow2,] rootfs.qcow2  qemu: the disk as a chain, image (hard link) <- ready
//	    │                                         snapshot's overlay (link) <- the sandbox's own overlay
//	    ├── vmlinuz, initrd, image.yaml           links of the image's: what the disk's modules match
//	    ├── known_hosts                           the guest host key, pinned
//	    ├── owner.lock                            flock held by the owner for its whole life
//	    ├── owner.json                            present only while the owner runs and SSH is ready
//	    ├── owner.log, console.log                owner output, guest console (size-bounded)
//	    ├── console.sock                          attach point for `heyvm console`
//	    ├── control.sock                          the owner's control socket (`heyvm port`)
//	    ├── last_stop.json                        when and why the VM last stopped
//	    ├── pause.json                            while the owner runs: why the VM is paused (preallocated)
//	    └── vz-machine-identifier                 apple_virt only: the VM's stable identity
package layout

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// EnvHome is the environment variable that moves the state root.
const EnvHome = "HEYO_HOME"

// Home returns the state root: $HEYO_HOME if set, else ~/.heyo.
func Home() (string, error) {
	if h := os.Getenv(EnvHome); h != "" {
		if !filepath.IsAbs(h) {
			abs, err := filepath.Abs(h)
			if err != nil {
				return "", fmt.Errorf("%s=%q: %w", EnvHome, h, err)
			}
			h = abs
		}
		return filepath.Clean(h), nil
	}
	u, err := os.UserHomeDir()
	if err != nil || u == "" {
		return "", errors.New("cannot find your home directory: set HEYO_HOME to a directory heyvm may use")
	}
	return filepath.Join(u, ".heyo"), nil
}

// Root is a resolved state root. All paths hang off it.
type Root struct{ Dir string }

// Open resolves the state root and makes sure it exists with mode 0700.
func Open() (Root, error) {
	h, err := Home()
	if err != nil {
		return Root{}, err
	}
	r := Root{Dir: h}
	if err := EnsureDir(h); err != nil {
		return Root{}, err
	}
	return r, nil
}

// EnsureDir creates dir (and parents) with mode 0700 and tightens an
// existing dir that is looser, since it may hold keys.
func EnsureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("restrict %s to 0700: %w", dir, err)
		}
	}
	return nil
}

func (r Root) KeysDir() string      { return filepath.Join(r.Dir, "keys") }
func (r Root) PrivateKey() string   { return filepath.Join(r.KeysDir(), "id_ed25519") }
func (r Root) PublicKey() string    { return filepath.Join(r.KeysDir(), "id_ed25519.pub") }
func (r Root) ImagesDir() string    { return filepath.Join(r.Dir, "images") }
func (r Root) SandboxesDir() string { return filepath.Join(r.Dir, "sandboxes") }
func (r Root) ConfigFile() string   { return filepath.Join(r.Dir, "config.yaml") }

// ContextsFile holds where sandboxes run besides this machine (SSH hosts,
// clusters) and the current context.
func (r Root) ContextsFile() string { return filepath.Join(r.Dir, "contexts.yaml") }
func (r Root) CacheDir() string     { return filepath.Join(r.Dir, "cache") }

// BuilderXfer is the folder `heyvm images build` shares read-write with
// the builder VM of arch: each build's output lands in a subfolder.
func (r Root) BuilderXfer(arch string) string { return filepath.Join(r.Dir, "builder", arch, "xfer") }

// BuilderSetupLock is held while the builder VM of arch (and its image) is
// looked for or made, so two first builds make one.
func (r Root) BuilderSetupLock(arch string) string {
	return filepath.Join(r.Dir, "builder", arch, "setup.lock")
}

// KVMNoteShown marks that the "join the kvm group" note was shown once.
// DebCacheDir keeps the Debian packages an image build in a VM
// downloaded, as <sha256>.deb: a rebuild fetches only what changed.
func (r Root) DebCacheDir() string { return filepath.Join(r.CacheDir(), "debs") }

// VMBuildLog is the console of the last image build in a VM.
func (r Root) VMBuildLog() string { return filepath.Join(r.CacheDir(), "vmbuild.log") }

func (r Root) KVMNoteShown() string { return filepath.Join(r.Dir, ".kvm-note-shown") }

// PushCache remembers the manifest of an image's last push or export.
func (r Root) PushCache(backend, name string) string {
	return filepath.Join(r.CacheDir(), "oci", backend, name+".json")
}

// WarmDir holds the ready snapshots of one image.
func (r Root) WarmDir(backend, image string) string {
	return filepath.Join(r.CacheDir(), "warm", backend, image)
}

// WarmSnapshot is one ready snapshot: a sandbox directory saved right
// after boot (rootfs.img, suspend.state, suspend.json) plus warm.json.
func (r Root) WarmSnapshot(backend, image, shape string) Sandbox {
	return Sandbox{Dir: filepath.Join(r.WarmDir(backend, image), shape)}
}

// WarmMeta is a snapshot's record: which image digest it was made from.
func (s Sandbox) WarmMeta() string { return filepath.Join(s.Dir, "warm.json") }

func (r Root) SandboxStoreLock() string {
	return filepath.Join(r.SandboxesDir(), ".store.lock")
}

// BackendImagesDir is where the images of one backend live.
func (r Root) BackendImagesDir(backend string) string {
	return filepath.Join(r.ImagesDir(), backend)
}

// ImageDir is one image's directory. name must already be validated.
func (r Root) ImageDir(backend, name string) string {
	return filepath.Join(r.BackendImagesDir(backend), name)
}

// Image files.
const (
	ImageKernel   = "vmlinuz"
	ImageInitrd   = "initrd"
	ImageRootfs   = "rootfs.img"
	ImageMetadata = "image.yaml"
	// ImageKernelRaw is an uncompressed copy of the kernel, made once for
	// hypervisors (Virtualization.framework) that cannot boot a compressed one.
	ImageKernelRaw = "vmlinux"
)

// Sandbox is the set of files of one sandbox.
type Sandbox struct{ Dir string }

// Sandbox returns the file set of sandbox id.
func (r Root) Sandbox(id string) Sandbox { return Sandbox{Dir: filepath.Join(r.SandboxesDir(), id)} }

func (s Sandbox) Config() string { return filepath.Join(s.Dir, "sandbox.yaml") }
func (s Sandbox) Rootfs() string { return filepath.Join(s.Dir, "rootfs.img") }

// A qemu sandbox's disk is a copy-on-write chain (internal/diskclone):
// Base, a hard link of the image's rootfs; WarmLayer, a link of the ready
// snapshot's overlay when it was made from one; and Overlay, its own
// qcow2, the only file its VM writes. Rootfs is a raw clone instead
// (apple_virt, and sandboxes made before chains).
func (s Sandbox) Overlay() string { return filepath.Join(s.Dir, OverlayName) }
func (s Sandbox) Base() string    { return filepath.Join(s.Dir, BaseName) }

// Names inside a sandbox directory of the chain's files.
const (
	BaseName      = "base.img"
	WarmLayerName = "warm.qcow2"
	OverlayName   = "rootfs.qcow2"
)

func (s Sandbox) KnownHosts() string { return filepath.Join(s.Dir, "known_hosts") }
func (s Sandbox) OwnerLock() string  { return filepath.Join(s.Dir, "owner.lock") }

// BusyLock is held by whoever is using a sandbox that stops itself when
// idle (the image builder): its owner never stops it while it is held.
func (s Sandbox) BusyLock() string    { return filepath.Join(s.Dir, "busy.lock") }
func (s Sandbox) StartLock() string   { return filepath.Join(s.Dir, "start.lock") }
func (s Sandbox) OwnerState() string  { return filepath.Join(s.Dir, "owner.json") }
func (s Sandbox) OwnerLog() string    { return filepath.Join(s.Dir, "owner.log") }
func (s Sandbox) ConsoleLog() string  { return filepath.Join(s.Dir, "console.log") }
func (s Sandbox) ConsoleSock() string { return SocketPath(filepath.Join(s.Dir, "console.sock")) }
func (s Sandbox) ControlSock() string { return SocketPath(filepath.Join(s.Dir, "control.sock")) }

// SSHSock is the owner's shared SSH connection to the guest (sshmux).
// The sockets are where SocketPath puts them: in the sandbox directory
// where the path fits sun_path, else in /tmp/heyvm-<uid>/.
func (s Sandbox) SSHSock() string  { return SocketPath(filepath.Join(s.Dir, "ssh.sock")) }
func (s Sandbox) LastStop() string { return filepath.Join(s.Dir, "last_stop.json") }

// SuspendState is the whole saved VM of a suspended sandbox (memory and
// devices); SuspendInfo, written after it, marks the sandbox suspended.
// SuspendTemp is the state while it is being written.
func (s Sandbox) SuspendState() string { return filepath.Join(s.Dir, "suspend.state") }
func (s Sandbox) SuspendInfo() string  { return filepath.Join(s.Dir, "suspend.json") }
func (s Sandbox) SuspendTemp() string  { return filepath.Join(s.Dir, "suspend.state.tmp") }

// PauseState holds why the running VM is paused. It is allocated when the
// owner starts and rewritten in place, so it can still be written when
// the host disk is full (the usual reason for a pause).
func (s Sandbox) PauseState() string { return filepath.Join(s.Dir, "pause.json") }

// MachineIdentifier holds the apple_virt backend's generic machine
// identifier. (No EFI variable store: apple_virt boots Linux directly.)
func (s Sandbox) MachineIdentifier() string { return filepath.Join(s.Dir, "vz-machine-identifier") }
