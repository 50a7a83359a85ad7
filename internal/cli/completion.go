package cli

import (
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
)

// addCompletions makes shell completion (`heyvm completion bash|zsh|fish`)
// offer sandbox and image names from the store. Which argument is a
// sandbox comes from each command's usage line, so a new command that
// takes an ID completes without being listed here:
//
//	"ID"      (any command)           one sandbox
//	"ID..."   (any command)           sandboxes, each offered once
//	"NAME"    (under `heyvm images`)  an image of the --backend given
//
// and the --image and --backend flags complete everywhere they exist.
// Completion reads the store and never writes it (not even ~/.heyo's
// creation); an error gives no candidates, never a message.
func addCompletions(root *cobra.Command) {
	seen := map[*pflag.Flag]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.ValidArgsFunction == nil && c.Runnable() && len(c.ValidArgs) == 0 {
			if slots := argSlots(c); len(slots) > 0 {
				c.ValidArgsFunction = completeSlots(slots)
			}
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if seen[f] {
				return
			}
			seen[f] = true
			switch f.Name {
			case "image":
				_ = c.RegisterFlagCompletionFunc(f.Name, func(cc *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
					return imageCandidates(cc), cobra.ShellCompDirectiveNoFileComp
				})
			case "backend":
				_ = c.RegisterFlagCompletionFunc(f.Name, cobra.FixedCompletions(backend.Names(), cobra.ShellCompDirectiveNoFileComp))
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// slot is what one positional argument is.
type slot int

const (
	slotOther     slot = iota // left to the shell (files)
	slotSandbox               // one sandbox
	slotSandboxes             // this and every later argument: sandboxes
	slotImage                 // an image
)

// argSlots reads a command's usage line ("exec ID [--cwd DIR] -- CMD...",
// "port add ID [HOST:]GUEST", "images push NAME REF") up to its first
// flag, and returns what each positional argument is; nil if none is a
// sandbox or an image.
func argSlots(c *cobra.Command) []slot {
	words := strings.Fields(c.Use)
	if len(words) < 2 {
		return nil
	}
	underImages := c.Parent() != nil && c.Parent().Name() == "images"
	var slots []slot
	useful := false
	for _, w := range words[1:] {
		if strings.HasPrefix(w, "-") || strings.HasPrefix(w, "[-") {
			break
		}
		s := slotOther
		switch {
		case w == "ID":
			s = slotSandbox
		case w == "ID...":
			s = slotSandboxes
		case w == "NAME" && underImages:
			s = slotImage
		}
		useful = useful || s != slotOther
		slots = append(slots, s)
		if s == slotSandboxes {
			break
		}
	}
	if !useful {
		return nil
	}
	return slots
}

func completeSlots(slots []slot) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		s := slotOther
		if n := len(args); n < len(slots) {
			s = slots[n]
		} else if slots[len(slots)-1] == slotSandboxes {
			s = slotSandboxes
		}
		switch s {
		case slotSandbox:
			return sandboxCandidates(nil), cobra.ShellCompDirectiveNoFileComp
		case slotSandboxes:
			return sandboxCandidates(args), cobra.ShellCompDirectiveNoFileComp
		case slotImage:
			return imageCandidates(c), cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveDefault
	}
}

// completionRoot is the state root, if it exists; completion must not
// create it.
func completionRoot() (layout.Root, bool) {
	h, err := layout.Home()
	if err != nil {
		return layout.Root{}, false
	}
	return layout.Root{Dir: h}, true
}

// sandboxCandidates are the user's sandboxes by name (heyvm's own builder
// VMs left out, as `list` does), each described by its id and image;
// those already on the command line are left out.
func sandboxCandidates(given []string) []string {
	root, ok := completionRoot()
	if !ok {
		return nil
	}
	all, _, err := sandbox.Store{Root: root}.List()
	if err != nil {
		return nil
	}
	taken := map[string]bool{}
	for _, g := range given {
		taken[g] = true
	}
	var out []string
	for _, sb := range all {
		c := sb.Config
		if c.Role != "" || taken[c.Name] || taken[c.ID] {
			continue
		}
		out = append(out, c.Name+"\t"+c.ID+", "+c.Image)
	}
	sort.Strings(out)
	return out
}

// imageCandidates are the images (and the aliases that resolve) of the
// backend the command line names, else this host's.
func imageCandidates(c *cobra.Command) []string {
	root, ok := completionRoot()
	if !ok {
		return nil
	}
	b := backend.DefaultName()
	if f := c.Flag("backend"); f != nil && f.Value.String() != "" {
		b = f.Value.String()
	}
	entries, err := image.Store{Root: root, Backend: b}.List()
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.Err != nil {
			continue
		}
		out = append(out, e.Name)
		out = append(out, e.Aliases...)
	}
	return out
}
