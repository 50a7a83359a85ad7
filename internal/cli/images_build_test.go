package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/heyvm/heyvm/internal/layout"
)

func TestImagesBuildRefusesBadInput(t *testing.T) {
	t.Setenv(layout.EnvHome, t.TempDir())
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	os.WriteFile(df, []byte("FROM default\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "x"}, "--file is required"},
		{[]string{"-f", df}, "--name is required"},
		{[]string{"-f", filepath.Join(dir, "nope"), "--name", "x"}, "no such Dockerfile"},
		{[]string{"-f", df, "--name", "default"}, "default image's name"},
		{[]string{"-f", df, "--name", "heyvm-builder"}, "heyvm's own"},
		{[]string{"-f", df, "--name", "Bad Name"}, "image name"},
		{[]string{"-f", df, "--name", "x", "--size-mb", "10"}, "--size-mb 10 is out of range"},
		{[]string{"-f", df, "--name", "x", "--engine", "podman"}, "use vm (the default) or docker"},
		{[]string{"-f", df, "--name", "x", "--build-arg", "=v"}, "not KEY=VALUE"},
		{[]string{"-f", df, "--name", "x", filepath.Join(dir, "nope")}, "is not a folder"},
		{[]string{"-f", df, "--name", "x", "--context", dir}, "give the build context folder as the last argument"},
		{[]string{"-f", df, "--name", "x", "--context", filepath.Join(dir, "nope")}, "give the build context folder as the last argument"},
		{[]string{"-f", df, "--name", "x", "--backend", "qemu", "--backend-type", "apple_virt"}, "disagree"},
	} {
		var out, errOut bytes.Buffer
		root := NewRoot(IO{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		root.SetArgs(append([]string{"images", "build"}, c.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("images build %v: error %v, want one containing %q", c.args, err, c.want)
		}
	}
}

func TestHostDockerBuildCommand(t *testing.T) {
	o := &ImagesBuildOptions{File: "/src/Dockerfile", Context: "/src", BuildArgs: []string{"A=1"}, NoCache: true}
	got := hostDockerBuild(o, "arm64", "heyvm-build/x")
	want := []string{"buildx", "build", "--platform", "linux/arm64", "-f", "/src/Dockerfile", "-t", "heyvm-build/x", "--load", "--build-arg", "A=1", "--no-cache", "/src"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("docker %v\nwant   %v", got, want)
	}
}

// No Docker engine runs on these machines: --engine docker must say so
// and what to do, whether the CLI is missing or the engine is.
func TestEngineDockerWithoutAnEngine(t *testing.T) {
	o := &ImagesBuildOptions{File: "/src/Dockerfile", Context: "/src"}
	t.Setenv("PATH", t.TempDir())
	_, _, _, err := buildWithHostDocker(context.Background(), IO{}, o, "amd64")
	if err == nil || !strings.Contains(err.Error(), "no docker command") || !strings.Contains(err.Error(), "--engine vm") {
		t.Fatalf("without docker: %v", err)
	}
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "docker"), []byte("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n"), 0o755)
	t.Setenv("PATH", bin+":/usr/bin:/bin")
	_, _, _, err = buildWithHostDocker(context.Background(), IO{}, o, "amd64")
	if err == nil || !strings.Contains(err.Error(), "no Docker engine is reachable") || !strings.Contains(err.Error(), "Cannot connect") {
		t.Fatalf("without an engine: %v", err)
	}
}
