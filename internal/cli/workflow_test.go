package cli

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The release workflow cannot run here; at least check that it parses and
// does what the README says: build both default images and push both to
// one ref on a tag.
func TestImagesWorkflowParses(t *testing.T) {
	b, err := os.ReadFile("../../.github/workflows/images.yml")
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		On struct {
			Push struct{ Tags []string } `yaml:"push"`
		} `yaml:"on"`
		Jobs map[string]struct {
			Steps []struct {
				Run string `yaml:"run"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatal(err)
	}
	if len(wf.On.Push.Tags) == 0 {
		t.Error("the workflow does not run on tags")
	}
	var all strings.Builder
	for _, j := range wf.Jobs {
		for _, s := range j.Steps {
			all.WriteString(s.Run + "\n")
		}
	}
	for _, want := range []string{"images build-default\n", "images build-default --arch arm64", "images push debian:12 ", "images push debian:12-arm64 "} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("the workflow never runs %q", want)
		}
	}
}
