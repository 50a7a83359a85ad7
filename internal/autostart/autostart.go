// Package autostart installs and removes the one boot-time unit that runs
// `heyvm autostart run` for a state root: a systemd user unit (a system
// unit as root) on Linux, a LaunchAgent on macOS. There is still no
// daemon: the unit starts the marked sandboxes' owners and exits.
package autostart

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"text/template"

	"howett.net/plist"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/layout"
)

// EnvUnitDir overrides where the unit is written (tests, packagers).
const EnvUnitDir = "HEYVM_AUTOSTART_UNIT_DIR"

// Kind is the unit flavour.
type Kind string

const (
	SystemdUser   Kind = "systemd-user"
	SystemdSystem Kind = "systemd-system"
	Launchd       Kind = "launchd"
)

// Unit is the boot-time unit of one state root.
type Unit struct {
	Kind   Kind
	Dir    string // where the unit file lives
	Name   string // file name
	Binary string // absolute path of heyvm
	Home   string // HEYO_HOME it serves
}

// Path is the unit file.
func (u Unit) Path() string { return filepath.Join(u.Dir, u.Name) }

// For works out the unit for root, run by the heyvm binary at bin. One
// state root gets one unit; the default root's is plain heyvm-autostart,
// others carry a hash of their path so they never collide.
func For(root layout.Root, bin string) (Unit, error) {
	u := Unit{Binary: bin, Home: root.Dir}
	suffix := ""
	if def, err := defaultHome(); err != nil || def != root.Dir {
		sum := sha256.Sum256([]byte(root.Dir))
		suffix = "-" + hex.EncodeToString(sum[:4])
	}
	switch {
	case runtime.GOOS == "darwin":
		home, err := os.UserHomeDir()
		if err != nil {
			return Unit{}, err
		}
		u.Kind, u.Dir, u.Name = Launchd, filepath.Join(home, "Library", "LaunchAgents"), "dev.heyvm.autostart"+suffix+".plist"
	case os.Geteuid() == 0:
		u.Kind, u.Dir, u.Name = SystemdSystem, "/etc/systemd/system", "heyvm-autostart"+suffix+".service"
	default:
		cfg := os.Getenv("XDG_CONFIG_HOME")
		if cfg == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return Unit{}, err
			}
			cfg = filepath.Join(home, ".config")
		}
		u.Kind, u.Dir, u.Name = SystemdUser, filepath.Join(cfg, "systemd", "user"), "heyvm-autostart"+suffix+".service"
	}
	if d := os.Getenv(EnvUnitDir); d != "" {
		u.Dir = d
	}
	return u, nil
}

func defaultHome() (string, error) {
	h, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(h, ".heyo"), nil
}

// wantedBy is the target whose .wants directory enables the unit.
func (u Unit) wantedBy() string {
	if u.Kind == SystemdSystem {
		return "multi-user.target"
	}
	return "default.target"
}

var systemdTemplate = template.Must(template.New("unit").Parse(`# Written by heyvm: starts the sandboxes marked with ` + "`heyvm autostart on`" + `
# at boot, and stops them cleanly at shutdown. Removed with the last mark.
[Unit]
Description=heyvm sandboxes marked for autostart ({{.Home}})
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
Environment=HEYO_HOME={{.Home}}
ExecStart={{.Binary}} autostart run
ExecStop={{.Binary}} autostart stop
TimeoutStartSec=10min
TimeoutStopSec=3min

[Install]
WantedBy={{.WantedBy}}
`))

// Content is the unit file's text.
func (u Unit) Content() ([]byte, error) {
	if strings.ContainsAny(u.Binary+u.Home, "\n\"'\\ %$") {
		return nil, fmt.Errorf("cannot write an autostart unit for paths with spaces, quotes or %%/$ (%q, %q): move heyvm or HEYO_HOME", u.Binary, u.Home)
	}
	if u.Kind == Launchd {
		return plist.MarshalIndent(launchAgent{
			Label:                strings.TrimSuffix(u.Name, ".plist"),
			ProgramArguments:     []string{u.Binary, "autostart", "run"},
			EnvironmentVariables: map[string]string{"HEYO_HOME": u.Home},
			RunAtLoad:            true,
			ProcessType:          launchdProcessType,
			StandardOutPath:      filepath.Join(u.Home, "autostart.log"),
			StandardErrorPath:    filepath.Join(u.Home, "autostart.log"),
		}, plist.XMLFormat, "\t")
	}
	var b bytes.Buffer
	err := systemdTemplate.Execute(&b, struct {
		Unit
		WantedBy string
	}{u, u.wantedBy()})
	return b.Bytes(), err
}

// launchdProcessType is the LaunchAgent's ProcessType. launchd applies
// resource limits by it, and what the job starts runs under them too: the
// sandboxes' owners, and so their VMs, which are the developer's
// interactive environments. Background would throttle them as work "not
// directly requested by the user"; Standard (the same as no ProcessType)
// still applies light CPU and I/O throttling; Adaptive follows XPC
// activity, which heyvm has none of. Interactive runs with the limits of
// an app, that is none, as a VM the user types into needs; the job itself
// exits once the owners are started, so it costs nothing while idle.
const launchdProcessType = "Interactive"

// launchAgent is the property list launchd reads.
type launchAgent struct {
	Label                string            `plist:"Label"`
	ProgramArguments     []string          `plist:"ProgramArguments"`
	EnvironmentVariables map[string]string `plist:"EnvironmentVariables"`
	RunAtLoad            bool              `plist:"RunAtLoad"`
	ProcessType          string            `plist:"ProcessType"`
	StandardOutPath      string            `plist:"StandardOutPath"`
	StandardErrorPath    string            `plist:"StandardErrorPath"`
}

// ParseLaunchAgent reads a plist back (for status and tests).
func ParseLaunchAgent(b []byte) (label string, args []string, runAtLoad bool, err error) {
	var la launchAgent
	if _, err := plist.Unmarshal(b, &la); err != nil {
		return "", nil, false, err
	}
	return la.Label, la.ProgramArguments, la.RunAtLoad, nil
}

// Installed reports whether the unit file exists.
func (u Unit) Installed() bool {
	_, err := os.Stat(u.Path())
	return err == nil
}

// Install writes the unit (atomically) and enables it: the .wants link
// that `systemctl enable` would make, so it works even where systemd is
// not running right now. It returns notes for the user.
func (u Unit) Install() ([]string, error) {
	b, err := u.Content()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(u.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("install the autostart unit: %w", err)
	}
	if err := fsutil.WriteFileAtomic(u.Path(), b, 0o644); err != nil {
		return nil, fmt.Errorf("install the autostart unit: %w", err)
	}
	var notes []string
	switch u.Kind {
	case Launchd:
		notes = append(notes, "installed "+u.Path()+" (RunAtLoad): marked sandboxes start when you log in")
		if uid := os.Getuid(); runtime.GOOS == "darwin" {
			exec.Command("launchctl", "bootstrap", fmt.Sprintf("gui/%d", uid), u.Path()).Run()
		}
	default:
		wants := filepath.Join(u.Dir, u.wantedBy()+".wants")
		if err := os.MkdirAll(wants, 0o755); err != nil {
			return nil, err
		}
		link := filepath.Join(wants, u.Name)
		os.Remove(link)
		if err := os.Symlink(u.Path(), link); err != nil {
			return nil, fmt.Errorf("enable the autostart unit: %w", err)
		}
		notes = append(notes, "installed and enabled "+u.Path())
		if u.Kind == SystemdUser {
			notes = append(notes, "it runs when your user session starts; to start marked sandboxes at boot, before you log in, run `loginctl enable-linger "+currentUser()+"` once")
		}
		if msg := u.systemctl("daemon-reload"); msg != "" {
			notes = append(notes, msg)
		}
	}
	return notes, nil
}

// Remove disables and deletes the unit. A missing unit is not an error.
func (u Unit) Remove() error {
	if u.Kind != Launchd {
		os.Remove(filepath.Join(u.Dir, u.wantedBy()+".wants", u.Name))
	} else if runtime.GOOS == "darwin" {
		exec.Command("launchctl", "bootout", fmt.Sprintf("gui/%d", os.Getuid()), u.Path()).Run()
	}
	if err := os.Remove(u.Path()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the autostart unit: %w", err)
	}
	if u.Kind != Launchd {
		u.systemctl("daemon-reload")
	}
	return nil
}

// systemctl tells a running systemd about the change. Where none runs
// (containers, CI), the files are still right for the next boot.
func (u Unit) systemctl(args ...string) string {
	if os.Getenv(EnvUnitDir) != "" {
		return "" // not a directory systemd reads
	}
	if u.Kind == SystemdUser {
		args = append([]string{"--user"}, args...)
	}
	if out, err := exec.Command("systemctl", args...).CombinedOutput(); err != nil {
		why := strings.TrimSpace(firstLine(string(out)))
		if why == "" {
			why = err.Error()
		}
		return "systemd is not reachable right now (" + why + "): the unit takes effect at the next boot"
	}
	return ""
}

func firstLine(s string) string { s, _, _ = strings.Cut(s, "\n"); return s }

func currentUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "$USER"
}
