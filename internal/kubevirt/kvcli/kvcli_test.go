package kvcli

import (
	"errors"
	"testing"

	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/kubevirt"
)

func TestPushRefIsByContent(t *testing.T) {
	im := &image.Image{Name: "debian:12", Meta: &image.Metadata{SHA256: map[string]string{"rootfs.img": "0123456789abcdef0123"}}}
	if got := PushRef("ghcr.io/acme/heyvm/", im); got != "ghcr.io/acme/heyvm/heyvm-debian-12:0123456789abcdef" {
		t.Errorf("PushRef: %s", got)
	}
	if got := repoOf("127.0.0.1:5000/a/heyvm-x:tag"); got != "127.0.0.1:5000/a/heyvm-x" {
		t.Errorf("repoOf: %s", got)
	}
	if imageNameFor("default", "arm64") != image.DefaultNameFor("qemu", "arm64") || imageNameFor("mine", "amd64") != "mine" {
		t.Errorf("imageNameFor")
	}
}

func TestStateWords(t *testing.T) {
	for want, s := range map[string]*kubevirt.Sandbox{
		"running":                     {Ready: true, Running: true, State: "Running"},
		"stopped":                     {State: "Stopped"},
		"starting":                    {Running: true, State: "Starting"},
		"failed (ErrorUnschedulable)": {Running: true, State: "ErrorUnschedulable", Problem: errors.New("no node")},
	} {
		if got := state(s); got != want {
			t.Errorf("state(%+v) = %q, want %q", s, got, want)
		}
	}
}
