// Package sshclient is heyvm's data plane: an in-process SSH client
// (golang.org/x/crypto/ssh) that authenticates with heyvm's managed key
// and trusts only the host key pinned when the sandbox was provisioned.
package sshclient

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/layout"
)

// ManagedKey loads heyvm's ed25519 key pair, generating it (0600) on
// first use. It returns the signer and the authorized_keys line.
func ManagedKey(root layout.Root) (ssh.Signer, string, error) {
	if err := layout.EnsureDir(root.KeysDir()); err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(root.PrivateKey())
	if errors.Is(err, os.ErrNotExist) {
		if err := generateKey(root); err != nil {
			return nil, "", err
		}
		b, err = os.ReadFile(root.PrivateKey())
	}
	if err != nil {
		return nil, "", err
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, "", fmt.Errorf("managed key %s is unreadable (%v): remove it and heyvm makes a new one, then recreate your sandboxes", root.PrivateKey(), err)
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " heyvm-managed"
	return signer, pub, nil
}

func generateKey(root layout.Root) error {
	// Serialise concurrent first runs so both end up with the same key.
	lock, err := fsutil.TryLock(root.PrivateKey() + ".lock")
	if err != nil {
		return fmt.Errorf("another heyvm is creating the managed key; try again: %w", err)
	}
	defer lock.Unlock()
	if _, err := os.Stat(root.PrivateKey()); err == nil {
		return nil
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "heyvm managed key")
	if err != nil {
		return err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(root.PublicKey(), ssh.MarshalAuthorizedKey(sshPub), 0o600); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(root.PrivateKey(), pem.EncodeToMemory(block), 0o600)
}

// HostAlias is the name under which a sandbox's host key is pinned. It
// does not change with the forwarded port, so OpenSSH (HostKeyAlias) and
// heyvm check the same line.
func HostAlias(sandboxID string) string { return "heyvm-" + sandboxID }

// PinHostKey writes the sandbox's known_hosts with the one key the guest
// reported on its console.
func PinHostKey(path, sandboxID, authorizedKey string) (ssh.PublicKey, error) {
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(authorizedKey))
	if err != nil {
		return nil, fmt.Errorf("guest reported an unreadable host key %q: %w", authorizedKey, err)
	}
	if key.Type() != ssh.KeyAlgoED25519 {
		return nil, fmt.Errorf("guest host key is %s, expected ssh-ed25519", key.Type())
	}
	line := HostAlias(sandboxID) + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key))) + "\n"
	return key, fsutil.WriteFileAtomic(path, []byte(line), 0o600)
}

// PinnedHostKey reads the pinned key back.
func PinnedHostKey(path string) (ssh.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("no pinned host key (%w): start the sandbox with `heyvm start`", err)
	}
	_, _, key, _, _, err := ssh.ParseKnownHosts(b)
	if err != nil {
		return nil, fmt.Errorf("%s is unreadable: %w", path, err)
	}
	return key, nil
}

// checkPinned is an ssh.HostKeyCallback that accepts exactly one key.
func checkPinned(want ssh.PublicKey) ssh.HostKeyCallback {
	return func(hostname string, _ net.Addr, got ssh.PublicKey) error {
		if !bytes.Equal(got.Marshal(), want.Marshal()) {
			return fmt.Errorf("host key mismatch for %s: the guest presented %s, but %s was pinned at provisioning; refusing to connect", hostname, ssh.FingerprintSHA256(got), ssh.FingerprintSHA256(want))
		}
		return nil
	}
}

// NewHostKey makes an ed25519 host key for a guest: the private key in
// OpenSSH's PEM format and the public key as an authorized_keys line.
// Made on the host, where it costs microseconds, instead of by ssh-keygen
// in an emulated guest.
func NewHostKey(comment string) (privPEM []byte, pubLine string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, "", err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment
	return pem.EncodeToMemory(block), line, nil
}
