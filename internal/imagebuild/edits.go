package imagebuild

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// heyvm's changes to a freshly installed root are one list of edits with
// two interpreters: ApplyEdits here, for a root on this host (the
// mmdebstrap build), and EditsScript, a shell script for busybox that the
// build VM runs on the root it installed. One list, so that both builds
// make the same image.

// editKind is what an edit does.
type editKind int

const (
	editWrite    editKind = iota // write a file (replacing whatever is there)
	editLink                     // make a symlink
	editRemove                   // remove what a glob matches
	editLockRoot                 // give root no usable password in /etc/shadow
)

// RootEdit is one change to the root; paths are relative to it.
type RootEdit struct {
	kind      editKind
	path      string
	mode      os.FileMode
	data      []byte
	target    string // editLink: where the link points
	ifMissing bool   // editLink: only where nothing is yet
}

// GuestEdits installs heyvm's init, sshd and console setup, and strips
// what a sandbox never needs.
func GuestEdits() []RootEdit {
	write := func(path string, mode os.FileMode, data []byte) RootEdit {
		return RootEdit{kind: editWrite, path: path, mode: mode, data: data}
	}
	edits := []RootEdit{
		write("etc/inittab", 0o644, GuestFile("inittab")),
		write("etc/heyvm/rc.sysinit", 0o755, GuestFile("rc.sysinit")),
		write("etc/heyvm/rc.shutdown", 0o755, GuestFile("rc.shutdown")),
		write("etc/heyvm/serial-login", 0o755, GuestFile("serial-login")),
		write("etc/heyvm/udhcpc.script", 0o755, GuestFile("udhcpc.script")),
		write("etc/heyvm/vsock-sshd", 0o755, GuestFile("vsock-sshd")),
		write("etc/ssh/sshd_config.d/heyvm.conf", 0o644, GuestFile("sshd_config")),
		write("etc/profile.d/heyvm-ready.sh", 0o644, GuestFile("ready.sh")),
		write("etc/gitconfig", 0o644, GuestFile("gitconfig")),
		write("etc/hostname", 0o644, []byte("heyvm\n")),
		write("etc/hosts", 0o644, []byte("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")),
		// debootstrap copies the build host's resolver; the guest gets its
		// own from DHCP.
		write("etc/resolv.conf", 0o644, nil),
		write("etc/fstab", 0o644, []byte("/dev/vda / ext4 rw,relatime 0 1\n")),
		write("root/.hushlogin", 0o644, nil),
		{kind: editLink, path: "sbin/init", target: "/bin/busybox"},
	}
	for _, applet := range []string{"poweroff", "reboot", "halt"} {
		edits = append(edits, RootEdit{kind: editLink, path: "sbin/" + applet, target: "/bin/busybox", ifMissing: true})
	}
	edits = append(edits,
		// Host keys made by openssh-server's postinst would be shared by
		// every sandbox; each guest makes its own on first boot instead.
		RootEdit{kind: editRemove, path: "etc/ssh/ssh_host_*"},
		RootEdit{kind: editLockRoot},
		// Each sandbox makes its own on first boot.
		write("etc/machine-id", 0o444, nil),
	)
	// Trim: package lists and caches, docs, man pages, translations.
	for _, pattern := range []string{
		"var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*",
		"usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
		"var/log/*.log", "debootstrap",
	} {
		edits = append(edits, RootEdit{kind: editRemove, path: pattern})
	}
	// Keep the trim for packages users install later.
	return append(edits, write("etc/dpkg/dpkg.cfg.d/heyvm-nodoc", 0o644, []byte(
		"path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\n")))
}

// ApplyEdits makes the edits to the root at root.
func ApplyEdits(root string, edits []RootEdit) error {
	for _, e := range edits {
		p := filepath.Join(root, e.path)
		switch e.kind {
		case editWrite:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			os.Remove(p) // may be a symlink (resolv.conf)
			if err := os.WriteFile(p, e.data, e.mode); err != nil {
				return err
			}
			if err := os.Chmod(p, e.mode); err != nil {
				return err
			}
		case editLink:
			if _, err := os.Lstat(p); err == nil && e.ifMissing {
				continue
			} else if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			os.Remove(p)
			if err := os.Symlink(e.target, p); err != nil {
				return err
			}
		case editRemove:
			matches, _ := filepath.Glob(p)
			for _, m := range matches {
				if err := os.RemoveAll(m); err != nil {
					return err
				}
			}
		case editLockRoot:
			if err := lockRootPassword(filepath.Join(root, "etc/shadow")); err != nil {
				return err
			}
		}
	}
	return nil
}

// lockRootPassword makes sure root has no usable password: the console
// shell is opened by init with `login -f`, and SSH takes keys only.
func lockRootPassword(shadow string) error {
	b, err := os.ReadFile(shadow)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && f[0] == "root" {
			lines[i] = "root:*:" + f[2]
		}
	}
	return os.WriteFile(shadow, []byte(strings.Join(lines, "\n")), 0o640)
}

// EditsScript is the edits as a POSIX shell script for busybox, to run
// on the root at the path in $R. Globs are the shell's (which, unlike
// ApplyEdits', do not match names that begin with a dot).
func EditsScript(edits []RootEdit) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, e := range edits {
		p := `"$R"/` + shellPath(e.path)
		switch e.kind {
		case editWrite:
			fmt.Fprintf(&b, "mkdir -p \"$(dirname %s)\"; rm -f %s\n", p, p)
			if len(e.data) == 0 {
				fmt.Fprintf(&b, ": >%s\n", p)
			} else {
				fmt.Fprintf(&b, "echo %s | base64 -d >%s\n", base64.StdEncoding.EncodeToString(e.data), p)
			}
			fmt.Fprintf(&b, "chmod %o %s\n", e.mode, p)
		case editLink:
			if e.ifMissing {
				fmt.Fprintf(&b, "[ -e %s ] || [ -L %s ] || ln -s %s %s\n", p, p, e.target, p)
			} else {
				fmt.Fprintf(&b, "rm -f %s; ln -s %s %s\n", p, e.target, p)
			}
		case editRemove:
			// Unquoted: the shell expands the glob; a glob that matches
			// nothing stays as it is, and rm -f ignores it.
			fmt.Fprintf(&b, "rm -rf \"$R\"/%s\n", e.path)
		case editLockRoot:
			// In place (cat >), so the file keeps its owner and mode.
			b.WriteString(`awk -F: 'BEGIN { OFS = ":" } $1 == "root" && NF >= 3 { $2 = "*" } { print }' "$R/etc/shadow" >"$R/etc/shadow.heyvm" && cat "$R/etc/shadow.heyvm" >"$R/etc/shadow" && rm -f "$R/etc/shadow.heyvm"` + "\n")
		}
	}
	return b.String()
}

// shellPath quotes a root-relative path that holds no glob.
func shellPath(p string) string {
	return "'" + strings.ReplaceAll(p, "'", `'\''`) + "'"
}
