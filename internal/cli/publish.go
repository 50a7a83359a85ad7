package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"

	"github.com/heyvm/heyvm/internal/contexts"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
)

// `wt --deploy --publish-image`: the deployed sandbox's image (--image),
// made here, goes to the context's host first. With a registry set on the
// context it is pushed there and pulled on the host; without one it is
// streamed over the context's connection (`images export NAME -` here
// into `images import -` there: no tar file on either side). An image of
// another architecture than the host's is built again there from its
// recorded Dockerfile and build context, when they are still here.

// publishImage makes the image named by --image present on the context's
// host, as it is here.
func publishImage(ctx context.Context, ios IO, t target, ctxName string, o *WtOptions) error {
	name := o.Create.Image
	st, err := imageStore("")
	if err != nil {
		return err
	}
	im, err := st.Resolve(name)
	if err != nil {
		return err
	}
	if image.Canonical(im.Name) == image.Canonical(image.DefaultNameFor(st.Backend, im.Meta.Arch)) {
		fmt.Fprintf(ios.ErrOut, "%s is the default image, which %s gets for itself: nothing to publish\n", im.Name, ctxName)
		return nil
	}
	there, err := remoteArch(ctx, t, ctxName)
	if err != nil {
		return err
	}
	if im.Meta.Arch != there {
		return rebuildThere(ctx, ios, t, ctxName, im, there)
	}
	if same, err := remoteHasImage(ctx, t, im); err != nil {
		return err
	} else if same {
		fmt.Fprintf(ios.ErrOut, "image %s is on %s already, as it is here\n", im.Name, ctxName)
		return nil
	}
	root, err := layout.Open()
	if err != nil {
		return err
	}
	c, err := contexts.Resolve(root, o.Context)
	if err != nil {
		return err
	}
	if c.Registry != "" {
		ref := strings.TrimSuffix(c.Registry, "/") + "/" + strings.NewReplacer(":", "-", "/", "-").Replace(im.Name) + ":" + shortSum(im)
		fmt.Fprintf(ios.ErrOut, "publishing %s to %s through %s\n", im.Name, ctxName, ref)
		if err := RunImagesPush(ctx, IO{In: ios.In, Out: ios.ErrOut, ErrOut: ios.ErrOut}, TransferOptions{Backend: st.Backend}, im.Name, ref); err != nil {
			return err
		}
		return ranOn(ctxName)(t.run(ctx, IO{In: strings.NewReader(""), Out: ios.ErrOut, ErrOut: ios.ErrOut},
			[]string{"images", "pull", ref, "--name", im.Name, "--force"}, false))
	}
	fmt.Fprintf(ios.ErrOut, "publishing %s to %s over its connection\n", im.Name, ctxName)
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(RunImagesExport(ctx, IO{Out: pw, ErrOut: ios.ErrOut}, TransferOptions{Backend: st.Backend}, im.Name, "-"))
	}()
	defer pr.Close()
	return importTo(ctx, IO{In: pr, Out: ios.ErrOut, ErrOut: ios.ErrOut}, t, ctxName, TransferOptions{Name: im.Name, Force: true}, "-")
}

// remoteArch is the architecture of the context's host (its guests').
func remoteArch(ctx context.Context, t target, ctxName string) (string, error) {
	var out, errb bytes.Buffer
	code, err := t.run(ctx, IO{In: strings.NewReader(""), Out: &out, ErrOut: &errb}, []string{"version", "--json"}, false)
	if err != nil || code != 0 {
		return "", fmt.Errorf("context %s: cannot ask its heyvm for its architecture: %v%s", ctxName, err, strings.TrimSpace(errb.String()))
	}
	var v struct {
		Arch string `json:"arch"`
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v.Arch == "" {
		return "", fmt.Errorf("context %s: its heyvm did not say its architecture (%q)", ctxName, strings.TrimSpace(out.String()))
	}
	return v.Arch, nil
}

// remoteHasImage says whether the host has an image of that name with
// the same files.
func remoteHasImage(ctx context.Context, t target, im *image.Image) (bool, error) {
	var out bytes.Buffer
	code, err := t.run(ctx, IO{In: strings.NewReader(""), Out: &out, ErrOut: io.Discard}, []string{"images", "inspect", "--json", im.Name}, false)
	if err != nil {
		return false, err
	}
	if code != 0 {
		return false, nil // none of that name
	}
	var there struct {
		SHA256 map[string]string `json:"sha256"`
	}
	if json.Unmarshal(out.Bytes(), &there) != nil || len(there.SHA256) == 0 {
		return false, nil
	}
	return maps.Equal(there.SHA256, im.Meta.SHA256), nil
}

// rebuildThere builds an image of another architecture again on the host
// from the Dockerfile and build context it was made from.
func rebuildThere(ctx context.Context, ios IO, t target, ctxName string, im *image.Image, arch string) error {
	d := im.Meta.Dockerfile
	how := fmt.Sprintf("build an %s image there (`heyvm --context %s images build --file Dockerfile --name %s`) or push one to a registry it reaches", arch, ctxName, im.Name)
	if d == nil {
		return fmt.Errorf("image %s is %s and %s runs %s guests, and it was not built from a Dockerfile heyvm could build again: %s", im.Name, im.Meta.Arch, ctxName, arch, how)
	}
	_, fileErr := os.Stat(d.File)
	_, ctxErr := os.Stat(d.Context)
	if fileErr != nil || ctxErr != nil {
		return fmt.Errorf("image %s is %s and %s runs %s guests; it was built from %s, which is not here any more: %s", im.Name, im.Meta.Arch, ctxName, arch, d.File, how)
	}
	fmt.Fprintf(ios.ErrOut, "image %s is %s and %s runs %s guests: building it there from %s\n", im.Name, im.Meta.Arch, ctxName, arch, d.File)
	return buildElsewhere(ctx, IO{In: ios.In, Out: ios.ErrOut, ErrOut: ios.ErrOut}, t, ctxName, &ImagesBuildOptions{
		File: d.File, Context: d.Context, Name: im.Name, SizeMB: int(max(im.Meta.RootfsSize>>20, 256)), BuildArgs: d.BuildArgs, Engine: "vm",
	})
}

// shortSum tags a published image by its root file system's digest.
func shortSum(im *image.Image) string {
	s := im.Meta.SHA256[layout.ImageRootfs]
	if len(s) > 12 {
		s = s[:12]
	}
	if s == "" {
		s = "latest"
	}
	return s
}
